#!/bin/bash
# Records which real server a real IPVS kernel picks for a sequence of new TCP connections, per
# scheduler (run as root inside a qemu VM with Debian's kernel, by tests/vm/run.sh):
#   GRIDLB_VM_OUT=tests/sched/golden/out tests/vm/run.sh tests/sched/golden/capture.sh
# A network namespace `lb` holds the VIP 10.0.0.1 and one service per scheduler (ports 80..); the
# guest's root namespace sends one SYN per client address (10.0.1.10..49); `ipvsadm -Lnc` tells
# which destination each connection got. The destinations never answer: scheduling happens on the SYN.
set -eu
out=${GRIDLB_VM_OUT:-/tmp/sched-golden}
mkdir -p "$out"
modprobe ip_vs; modprobe veth
for s in rr wrr lc wlc sed nq sh dh mh fo ovf lblc lblcr; do modprobe ip_vs_$s; done  # no twos in 6.1
ip netns add lb
ip link add c0 type veth peer name l0 netns lb
ip link set c0 up
ip addr add 10.0.1.1/24 dev c0
for i in $(seq 10 49); do ip addr add 10.0.1.$i/24 dev c0; done
ip -n lb link set lo up
ip -n lb link set l0 up
ip -n lb addr add 10.0.1.2/24 dev l0
ip -n lb addr add 10.0.2.1/24 dev l0
ip -n lb addr add 10.0.0.1/32 dev l0
ip route add 10.0.0.1/32 via 10.0.1.2
/usr/bin/python3 - "$out" <<'PY'
import socket, subprocess, sys, time
out = sys.argv[1]
specs = ["rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "sh -b sh-port", "dh", "mh", "mh -b mh-port",
         "fo", "ovf", "lblc", "lblcr"]
with open(f"{out}/services", "w") as services:
    for k, spec in enumerate(specs):
        port = 80 + k
        lb = ["ip", "netns", "exec", "lb", "ipvsadm"]
        subprocess.run([*lb, "-A", "-t", f"10.0.0.1:{port}", "-s", *spec.split()], check=True)
        for n, w in ((11, 1), (12, 2), (13, 1), (14, 3)):
            subprocess.run([*lb, "-a", "-t", f"10.0.0.1:{port}", "-r", f"10.0.2.{n}:{port}", "-g", "-w", str(w)], check=True)
        print(port, spec, file=services, flush=True)
        with open(f"{out}/order-{port}", "w") as order:
            for i in range(10, 50):
                s = socket.socket()
                s.setblocking(False)
                s.bind((f"10.0.1.{i}", 0))
                print(f"10.0.1.{i} {s.getsockname()[1]}", file=order, flush=True)
                try:
                    s.connect(("10.0.0.1", port))
                except BlockingIOError:
                    pass
                time.sleep(0.02)
                s.close()
        time.sleep(0.2)
        with open(f"{out}/conns-{port}", "w") as conns:
            subprocess.run([*lb, "-Lnc"], stdout=conns, check=True)
PY
ip netns exec lb ipvsadm -Ln > "$out/Ln"
uname -r > "$out/kernel"
