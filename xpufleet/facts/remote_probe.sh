# xpufleet doctor probe, POSIX-sh part: runs ON THE NODE only when python3 is missing.
# It prints the same JSON shape as remote_probe.py for what a shell can see (no torch,
# no TCP test); the control node reports the rest as absent. The parameters arrive as
# data lines read with `read -r` (see xpufleet.facts.probe), never as shell text.
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

printf '{"probe": {"kind": "sh", "schema": 1, "errors": []}, "python": null'
printf ', "clock": {"start": %s, "elapsed": 0, "resolution": 1.0}' "$(date +%s)"
printf ', "hostname": '; hostname 2>/dev/null | jstr
printf ', "lab_text": '; jfile /opt/intel/.lab/node.json

printf ', "drm": ['
sep=""
for d in /sys/class/drm/card*; do
  c=${d##*/}
  case "$c" in card*[!0-9]*|card) continue ;; esac
  [ -d "$d" ] || continue
  printf '%s{"card": "%s", "vendor": ' "$sep" "$c"; head -c 64 "$d/device/vendor" 2>/dev/null | tr -d '\n' | jstr
  printf ', "device": '; head -c 64 "$d/device/device" 2>/dev/null | tr -d '\n' | jstr
  printf ', "uevent": '; jfile "$d/device/uevent"
  printf '}'
  sep=", "
done
printf ']'

printf ', "modules": {'
sep=""
for m in i915 xe; do
  present=false; [ -d "/sys/module/$m" ] && present=true
  printf '%s"%s": {"present": %s, "version": ' "$sep" "$m" "$present"
  if [ -r "/sys/module/$m/version" ]; then tr -d '\n' < "/sys/module/$m/version" | jstr; else printf 'null'; fi
  printf '}'
  sep=", "
done
printf '}'

printf ', "opencl_icds": {'
sep=""
for f in /etc/OpenCL/vendors/*.icd; do
  [ -f "$f" ] || continue
  printf '%s' "$sep"; printf '%s' "${f##*/}" | jstr; printf ': '; tr -d '\n' < "$f" | jstr
  sep=", "
done
printf '}'

printf ', "packages": {'
if command -v dpkg >/dev/null 2>&1; then printf '"dpkg": '; jrun dpkg -s $P_PKGS; fi
printf '}'

printf ', "gpu_tools": {"xpu_smi_version": '; jrun xpu-smi -v
printf ', "xpu_smi_discovery_json": '; jrun xpu-smi discovery -j
printf ', "xpu_smi_discovery": '; jrun xpu-smi discovery
ZE_FLAT_DEVICE_HIERARCHY=$P_HIERARCHY
export ZE_FLAT_DEVICE_HIERARCHY
printf ', "sycl_ls": '; jrun sycl-ls
printf ', "paths": {"xpu-smi": '; command -v xpu-smi | jstr
printf ', "sycl-ls": '; command -v sycl-ls | jstr
printf '}}'

printf ', "oneapi": {"root": '; printf '%s' "$P_ONEAPI" | jstr
if [ -d "$P_ONEAPI" ]; then
  printf ', "exists": true, "setvars": %s' "$( [ -f "$P_ONEAPI/setvars.sh" ] && echo true || echo false )"
  printf ', "components": {'
  sep=""
  for comp in "$P_ONEAPI"/*; do
    [ -d "$comp" ] || continue
    name=${comp##*/}
    case "$name" in [0-9]*) continue ;; esac
    printf '%s' "$sep"; printf '%s' "$name" | jstr
    printf ': {"latest": '
    if [ -L "$comp/latest" ]; then readlink "$comp/latest" | tr -d '\n' | jstr; else printf 'null'; fi
    printf ', "latest_exists": %s, "versions": [' "$( [ -d "$comp/latest" ] && echo true || echo false )"
    vsep=""
    for v in "$comp"/[0-9]*; do
      [ -d "$v" ] || continue
      printf '%s' "$vsep"; printf '%s' "${v##*/}" | jstr; vsep=", "
    done
    printf ']}'
    sep=", "
  done
  printf '}, "unified": {'
  sep=""
  for v in "$P_ONEAPI"/[0-9]*; do
    [ -d "$v" ] || continue
    printf '%s' "$sep"; printf '%s' "${v##*/}" | jstr
    printf ': %s' "$( [ -f "$v/oneapi-vars.sh" ] && echo true || echo false )"
    sep=", "
  done
  printf '}}'
else
  printf ', "exists": false, "setvars": false, "components": {}}'
fi

printf ', "meminfo": '; jfile /proc/meminfo

printf ', "disk": '
if [ -n "$P_MODEL" ]; then
  p=$P_MODEL
  while [ ! -e "$p" ] && [ "$p" != "/" ] && [ -n "$p" ]; do p=$(dirname -- "$p"); done
  set -- $(df -Pk -- "$p" 2>/dev/null | awk 'NR == 2 { print $2, $4 }')
  printf '{"path": '; printf '%s' "$P_MODEL" | jstr
  printf ', "checked": '; printf '%s' "$p" | jstr
  if [ -n "$2" ]; then printf ', "total": %s, "free": %s}' "$(($1 * 1024))" "$(($2 * 1024))"
  else printf ', "error": "df failed"}'; fi
else
  printf 'null'
fi

printf ', "nic": '
if [ -n "$P_NIC" ]; then
  printf '{"name": '; printf '%s' "$P_NIC" | jstr
  printf ', "exists": %s' "$( [ -e "/sys/class/net/$P_NIC" ] && echo true || echo false )"
  printf ', "ip_text": '; ip -o addr show dev "$P_NIC" 2>/dev/null | jstr
  printf '}'
else
  printf 'null'
fi

printf ', "env": {"venv": '; printf '%s' "$P_VENV" | jstr
printf ', "exists": %s, "present": false, "error": "python3 missing: the probe ran in POSIX sh"}' \
  "$( [ -d "$P_VENV" ] && echo true || echo false )"
printf ', "wheels_text": '; if [ -n "$P_WHEELS" ]; then jfile "$P_WHEELS"; else printf 'null'; fi
printf ', "model": '
if [ -z "$P_MODEL" ]; then
  printf 'null'
elif [ -d "$P_MODEL" ]; then
  printf '{"path": '; printf '%s' "$P_MODEL" | jstr
  printf ', "exists": true, "files_text": '
  for f in "$P_MODEL"/* "$P_MODEL"/.[!.]*; do
    [ -f "$f" ] && printf "%s %s\n" "$(stat -c %s -- "$f")" "${f##*/}"
  done | jstr
  printf ', "fstype": '; stat -f -c %T "$P_MODEL" 2>/dev/null | tr -d '\n' | jstr
  printf ', "manifest_text": '; jfile "$P_MODEL/$P_MANIFEST"
  printf ', "index_text": '; jfile "$P_MODEL/model.safetensors.index.json"
  printf '}'
else
  printf '{"path": '; printf '%s' "$P_MODEL" | jstr; printf ', "exists": false}'
fi
printf ', "resolve": null, "busy": null, "rendezvous": null}\n'
