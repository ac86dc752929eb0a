# xpufleet doctor probe, POSIX-sh part: runs ON THE NODE only when python3 is missing.
# The helpers below; then each registered fact's `sh` snippet prints the same JSON value
# as its python expression for what a shell can see (no torch, no TCP test), one
# section per fact (xpufleet.facts.batch.probe_script); a fact without a snippet is
# absent. The parameters arrive as data lines read with `read -r` into $P_<NAME>
# (see xpufleet.facts.probe), never as shell text.
LC_ALL=C
export LC_ALL
T=""
if command -v timeout >/dev/null 2>&1; then T="timeout 20"; fi

jstr() {
  tr -d '\000-\010\013\014\016-\037' | awk -v q='"' -v bs='\\' '
    BEGIN { ORS = ""; printf "%s", q }
    {
      gsub(/\r/, "")
      out = ""
      n = length($0)
      for (i = 1; i <= n; i++) {
        c = substr($0, i, 1)
        if (c == bs || c == q) out = out bs c
        else if (c == "\t") out = out bs "t"
        else out = out c
      }
      if (NR > 1) printf "%s", bs "n"
      printf "%s", out
    }
    END { printf "%s", q }'
}

jfile() { if [ -r "$1" ]; then jstr < "$1"; else printf 'null'; fi; }

jrun() {
  if ! command -v "$1" >/dev/null 2>&1; then printf '{"missing": true}'; return; fi
  o=$($T "$@" 2>/dev/null); rc=$?
  printf '{"missing": false, "rc": %s, "out": ' "$rc"
  printf '%s\n' "$o" | jstr
  printf ', "err": "", "timeout": %s}' "$( [ "$rc" = 124 ] && echo true || echo false )"
}

