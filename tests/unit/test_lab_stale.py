"""What counts as a killed lab's leftover on a lab's net (xpufleet/lab/stale.py): names and
addresses derived from THIS net only, things a lab made only, and processes only when
they hold this lab's addresses at its port."""

from __future__ import annotations

from xpufleet.lab import Lab
from xpufleet.lab.shaping import net_hex
from xpufleet.lab.stale import OtherLab, lab_rule, own_nic, parse_holder, parse_listening

LAB = Lab("/tmp/lab-b", "127.0.9", 2209)

# /proc/net/tcp as the kernel writes it (header, a listener, an established connection)
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0109007F:08A1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4711 1 000000008561d567 100 0 0 10 0
   1: FE09807F:08A1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4712 1 000000008561d567 100 0 0 10 0
   2: 0109C07F:792E 0109C07F:8780 01 00000000:00000000 03:00000B36 00000000     0        0 4713 3 000000001aa6d021
"""  # noqa: E501

# `iptables -S` lines as firewall.py and bastion.py write them (OTHER: another lab dir)
BASTION = (
    "-A OUTPUT -p tcp -m iprange --dst-range 127.128.9.1-127.128.9.253 -m tcp --dport 2209 "
    '-m owner ! --gid-owner 1001 -m comment --comment "xpufleet-lab:540cfb3f8b:bastion" '
    "-j REJECT --reject-with tcp-reset"
)
BLOCKED_PORT = (
    "-A INPUT -d 127.0.9.2/32,127.192.9.2/32 -p tcp -m tcp --dport 31209 "
    '-m comment --comment "xpufleet-lab:0123456789:node2" -j DROP'
)


def test_holders_are_read_from_their_names() -> None:
    assert parse_holder(b"xpufleet-lab:/tmp/old clone/.lab:node12") == ("/tmp/old clone/.lab", 12)
    assert parse_holder(b"xpufleet-lab:/tmp/x/.lab:nodeA") is None
    assert parse_holder(b"sleep") is None
    assert parse_holder(b"sshd: /usr/sbin/sshd -f /tmp/x/.lab/nodes/node1/sshd_config") is None


def test_listening_sockets_are_read_from_proc_net_tcp() -> None:
    assert parse_listening(TCP) == {
        "4711": ("127.0.9.1", 2209),
        "4712": ("127.128.9.254", 2209),
    }


def test_fabric_nics_of_this_net_only() -> None:
    assert own_nic(LAB, "hsn0-9-1") and own_nic(LAB, "hsn0-9-32") and own_nic(LAB, "hsp0-9-4")
    for other in ("hsn0-91-1", "hsn0-19-1", "hsn10-9-1", "hsn0-9-", "hsn0-9-x", "eth0", "lo"):
        assert not own_nic(LAB, other), other
    assert own_nic(Lab("/l", "127.0.91", 2209), "hsn0-91-1")


def test_rules_a_lab_made_on_this_nets_addresses() -> None:
    assert lab_rule(LAB, BASTION)  # whichever lab dir's tag: the killed lab's
    assert lab_rule(LAB, BLOCKED_PORT)
    # another net's: never
    assert not lab_rule(Lab("/l", "127.0.1", 2209), BASTION)
    assert not lab_rule(Lab("/l", "127.0.1", 2209), BLOCKED_PORT)
    assert not lab_rule(LAB, BASTION.replace("127.128.9.", "127.128.19."))
    # not a lab's: the same addresses without the lab's tag
    assert not lab_rule(LAB, BLOCKED_PORT.replace("xpufleet-lab:", "operator:"))
    assert not lab_rule(LAB, BLOCKED_PORT.split(" -m comment")[0] + " -j DROP")
    # blocked_egress names no address (a cgroup of its own lab): not this net's
    egress = (
        "-A OUTPUT -p tcp -m tcp --dport 29209 -m cgroup --path xpufleet-lab-0123456789-node2 "
        '-m comment --comment "xpufleet-lab:0123456789:node2" -j DROP'
    )
    assert not lab_rule(LAB, egress)
    assert not lab_rule(LAB, "-P INPUT ACCEPT")


def test_another_labs_nodes_collide_only_on_this_net_and_port() -> None:
    node_socket = {("127.0.9.1", 2209), ("127.128.9.1", 2209)}
    killed = OtherLab("/tmp/gone/.lab", {1: [10, 11]}, {}, node_socket)
    assert killed.on_net(LAB) and killed.collides(LAB)  # its directory is gone: sockets say
    # the lifecycle tests' lab: same net, a port of its own: shares the net, no collision
    beside = OtherLab("/tmp/t/lab", {1: [12]}, {}, {("127.0.9.1", 2210)})
    assert beside.on_net(LAB) and not beside.collides(LAB)
    # a dead_node-faulted node listens on nothing: its state file says
    quiet = OtherLab("/tmp/q/.lab", {2: [13]}, {"net": "127.0.9", "port": 2209})
    assert quiet.on_net(LAB) and quiet.collides(LAB)
    for other in (
        OtherLab("/tmp/o/.lab", {1: [14]}, {}, {("127.0.19.1", 2209), ("127.128.19.1", 2209)}),
        OtherLab("/tmp/p/.lab", {1: [15]}, {"net": "127.0.1", "port": 2209}),
    ):
        assert not other.on_net(LAB) and not other.collides(LAB)


def test_tc_matches_show_the_net_in_hex() -> None:
    assert net_hex(LAB) == "7f0009" and net_hex(Lab("/l", "127.1.255", 1)) == "7f01ff"


def test_a_lab_whose_directory_still_describes_it_is_not_a_leftover() -> None:
    sockets = {("127.0.9.1", 2209)}
    state = {"net": "127.0.9", "port": 2209, "nodes": {"1": {"holder": 11}}}
    assert OtherLab("/tmp/a/.lab", {1: [10, 11]}, state, sockets).intact
    # its clone deleted (no state), or a state of other processes (written since)
    assert not OtherLab("/tmp/a/.lab", {1: [10, 11]}, {}, sockets).intact
    assert not OtherLab("/tmp/a/.lab", {1: [20, 21]}, state, sockets).intact
    assert not OtherLab("/tmp/a/.lab", {2: [10, 11]}, state, sockets).intact
