#!/bin/bash
# Captures the real ipvsadm 1.31's text for rules.txt under a kernel with IPVS (run inside the lab VM:
#   GRIDLB_VM_OUT=tests/ipvsadm/golden/out tests/vm/run.sh tests/ipvsadm/golden/capture.sh
# with tests/vm/run.sh). Writes one file per command to $GRIDLB_VM_OUT.
set -u
cd "$(dirname "$0")"
out=${GRIDLB_VM_OUT:-/tmp/golden-out}
mkdir -p "$out"
for m in ip_vs ip_vs_wlc ip_vs_rr ip_vs_sh ip_vs_mh ip_vs_wrr ip_vs_lc ip_vs_pe_sip; do modprobe $m; done
ipvsadm -C
grep -v '^#' rules.txt | ipvsadm -R; echo "restore rc=$?" > "$out/restore.rc"
grep -v '^#' ../../data/seed-ipvsadm-S.txt | grep '\[' | ipvsadm -R; echo "seed restore rc=$?" >> "$out/restore.rc"
ipvsadm --set 3600 60 0
run() { name=$1; shift; ipvsadm "$@" > "$out/$name.out" 2> "$out/$name.err"; echo $? > "$out/$name.rc"; }
run Ln -Ln
run L_names -L
run S -S
run Sn -S -n
run stats -L -n --stats
run stats_exact -L -n --stats --exact
run rate -L -n --rate
run thresholds -L -n --thresholds
run persistent_conn -L -n --persistent-conn
run tun_info -L -n --tun-info
run timeout -L --timeout
run service -L -n -t 10.0.0.1:2811
run nosort_service -L -n --nosort -t 10.0.0.1:2811
run conn -L -n -c
run daemon -L --daemon
i=0
while IFS= read -r line; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  run "error$i" $line
  printf '%s\n' "$line" > "$out/error$i.cmd"
done < errors.txt
printf '# comment\n-A -t 10.0.0.5:80\n' | ipvsadm -R > "$out/comment_restore.out" 2> "$out/comment_restore.err"
echo $? > "$out/comment_restore.rc"
ipvsadm -Ln > "$out/final_Ln.out"
uname -r > "$out/kernel"
ipvsadm --version > "$out/version"
