#!/usr/bin/env bash
# Compares vdisk's backup engine with restic and borg on the reference disk
# (4 GiB virtual holding 1 GiB of scattered random data): a full backup into
# a local repository and its restore, side by side, with ratios and peak
# memory; then an incremental after 1% scattered changes through a qemu-nbd
# dirty bitmap (bytes read against bytes changed), and the peak memory of a
# backup of a 2 TiB sparse disk.
#
#   bash bench/backup/compare.sh [WORKDIR]     (default /tmp/vdisk-bench-backup, on a real filesystem)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/tmp/vdisk-bench-backup}
for tool in qemu-img qemu-io qemu-nbd restic borg jq /usr/bin/time; do
	command -v $tool >/dev/null || { echo "$tool is needed (apt-get install qemu-utils restic borgbackup jq time)"; exit 1; }
done
mkdir -p "$work"
go build -o "$work/vdisk" "$root/cmd/vdisk"
go build -o "$work/gen" "$root/bench/convert/gen"
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk ref.raw ref.vmdk
export VDISK_REPO_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
rm -rf vrepo rrepo brepo out.raw rout bout
sync

# timed CMD…: prints "seconds peakKiB"
timed() { /usr/bin/time -f "%e %M" -o t.txt "$@" >/dev/null 2>&1; cat t.txt; }

./vdisk repo init --repo vrepo >/dev/null
restic init --repo rrepo >/dev/null 2>&1
borg init -e repokey brepo >/dev/null 2>&1

read -r v_b v_bm < <(timed ./vdisk backup --repo vrepo --progress none ref.vmdk)
read -r r_b r_bm < <(timed restic backup --repo rrepo ref.raw)
read -r g_b g_bm < <(timed borg create --compression zstd,3 brepo::a ref.raw)
sync
read -r v_ru _ < <(timed ./vdisk restore --repo vrepo -t unsafe -O raw latest out.raw)
rm -f out.raw; sync
read -r v_r v_rm < <(timed ./vdisk restore --repo vrepo -O raw latest out.raw)
read -r r_r r_rm < <(timed restic restore --repo rrepo latest --target rout)
mkdir -p bout
read -r g_r g_rm < <(cd bout && timed borg extract ../brepo::a)
cmp -s out.raw ref.raw && echo "vdisk restore equals the source" || echo "vdisk restore DIFFERS"
du_v=$(du -sm vrepo | cut -f1); du_r=$(du -sm rrepo | cut -f1); du_g=$(du -sm brepo | cut -f1)
printf '%-26s %9s %9s %9s %14s %14s\n' "reference disk, local repo" vdisk restic borg "restic/vdisk" "borg/vdisk"
printf '%-26s %8ss %8ss %8ss %13sx %13sx\n' "full backup" "$v_b" "$r_b" "$g_b" "$(awk "BEGIN{printf \"%.2f\", $r_b/$v_b}")" "$(awk "BEGIN{printf \"%.2f\", $g_b/$v_b}")"
printf '%-26s %8ss %8ss %8ss %13sx %13sx\n' "restore, not synced" "$v_ru" "$r_r" "$g_r" "$(awk "BEGIN{printf \"%.2f\", $r_r/$v_ru}")" "$(awk "BEGIN{printf \"%.2f\", $g_r/$v_ru}")"
printf '%-26s %8ss %9s %9s   (vdisk syncs by default; restic and borg do not)\n' "restore, synced" "$v_r" - -
printf '%-26s %7sM %8sM %8sM\n' "peak RSS backup" "$((v_bm/1024))" "$((r_bm/1024))" "$((g_bm/1024))"
printf '%-26s %7sM %8sM %8sM\n' "peak RSS restore" "$((v_rm/1024))" "$((r_rm/1024))" "$((g_rm/1024))"
printf '%-26s %7sM %8sM %8sM\n' "repository size" "$du_v" "$du_r" "$du_g"
rm -rf out.raw rout bout

# Incremental through a dirty bitmap: 1% of the disk rewritten in
# scattered 64 KiB blocks.
rm -f inc.qcow2 nbd.sock
qemu-img convert -f raw -O qcow2 ref.raw inc.qcow2
nbdback() {
	qemu-nbd -r -t -e 4 -f qcow2 -B b0 -k "$work/nbd.sock" inc.qcow2 & local p=$!
	for _ in $(seq 100); do [ -S nbd.sock ] && break; sleep 0.05; done
	./vdisk backup --repo vrepo --progress none --output=json --bitmap b0 "nbd+unix:///?socket=$work/nbd.sock" >inc.json
	kill $p; wait $p 2>/dev/null || true
	rm -f nbd.sock
}
qemu-img bitmap --add -g 64K inc.qcow2 b0
nbdback
qemu-img bitmap --clear inc.qcow2 b0
# (a) 1% of the disk in whole 4 MiB regions at random places;
# (b) 1% in 64 KiB blocks at random places (each touches a 4 MiB chunk,
#     which is re-read whole: the ratio to count is against those chunks).
scatter() { # BLOCKSIZE COUNT
	local cmds=()
	for i in $(seq "$2"); do cmds+=(-c "write -P $((i % 250 + 1)) $(( (RANDOM * 32768 + RANDOM) % ((4<<30) / $1) * $1 )) $1"); done
	qemu-io -f qcow2 "${cmds[@]}" inc.qcow2 >/dev/null
}
for kind in chunks blocks; do
	if [ $kind = chunks ]; then bs=$((4<<20)); else bs=$((64<<10)); fi
	n=$(( (4<<30) / 100 / bs ))
	scatter $bs $n
	nbdback
	qemu-img bitmap --clear inc.qcow2 b0
	read_b=$(jq '.[0].summary.BytesRead' inc.json); new_b=$(jq '.[0].summary.BytesNew' inc.json)
	changed=$((n * bs))
	echo "incremental after 1% scattered changes in $((bs>>10)) KiB blocks ($((changed>>20)) MiB): read $((read_b>>20)) MiB = $(awk "BEGIN{printf \"%.2f\", $read_b/$changed}")x the changed bytes, stored $((new_b>>20)) MiB new"
done

# Memory on a 2 TiB sparse disk with data spread over it.
rm -f big.vmdk
./vdisk create -f vmdk big.vmdk 2047G >/dev/null
cmds=()
for i in $(seq 0 63); do cmds+=(-c "write -P $((i + 1)) $((i * (31<<30))) 4M"); done
qemu-io -f vmdk "${cmds[@]}" big.vmdk >/dev/null
read -r v_big v_bigm < <(timed ./vdisk backup --repo vrepo --progress none big.vmdk)
echo "backup of a 2 TiB sparse disk (256 MiB of data in 64 places; 2047 GiB, the monolithicSparse limit): ${v_big}s, peak RSS $((v_bigm/1024)) MiB"
rm -f t.txt inc.json
