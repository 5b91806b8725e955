#!/usr/bin/env bash
# Compares vdisk's backup engine with restic and borg on the reference disk
# (4 GiB virtual holding 1 GiB of scattered data, a raw image): a full
# backup into a local repository and its restore, side by side, with wall
# and CPU times, ratios and peak memory; then incrementals after 1%
# scattered changes through a qemu-nbd dirty bitmap (bytes read against
# bytes changed, chunks stored against chunks changed), and the peak memory
# of a backup of a 2 TiB sparse disk. The machine may be shared: compare
# the CPU times as well as the wall times, and run it several times.
#
#   bash bench/backup/compare.sh [WORKDIR]     (default /tmp/vdisk-bench-backup, on a real filesystem)
#   REPEAT=N bash bench/backup/compare.sh      (full backups N times each, best counts; default 2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/tmp/vdisk-bench-backup}
for tool in qemu-img qemu-io qemu-nbd restic borg jq awk /usr/bin/time; do
	command -v $tool >/dev/null || { echo "$tool is needed (apt-get install qemu-utils restic borgbackup jq time)"; exit 1; }
done
mkdir -p "$work"
go build -o "$work/vdisk" "$root/cmd/vdisk"
go build -o "$work/gen" "$root/bench/convert/gen"
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
export VDISK_REPO_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
rm -rf vrepo rrepo brepo out.raw rout bout
sync

# timed CMD…: prints "wall-seconds cpu-seconds(user+sys) peakKiB"
timed() { /usr/bin/time -f "%e %U %S %M" -o t.txt "$@" >/dev/null 2>&1; awk '{printf "%s %.2f %s\n", $1, $2+$3, $4}' t.txt; }
ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }

# best OLD NEW: the smaller of two numbers ("" counts as none).
best() { if [ -z "$1" ] || awk "BEGIN{exit !($2 < $1)}"; then echo "$2"; else echo "$1"; fi; }

# The same raw image for all three, into fresh repositories, REPEAT times
# (default 2) in turn; the best wall and the best CPU time of each count,
# so that a load spike from another user of the machine hits one try.
v_b= v_bc= r_b= r_bc= g_b= g_bc=
for _ in $(seq "${REPEAT:-2}"); do
	rm -rf vrepo rrepo brepo
	./vdisk repo init --repo vrepo >/dev/null
	restic init --repo rrepo >/dev/null 2>&1
	borg init -e repokey brepo >/dev/null 2>&1
	sync
	read -r w c v_bm < <(timed ./vdisk backup --repo vrepo --progress none ref.raw)
	v_b=$(best "$v_b" "$w"); v_bc=$(best "$v_bc" "$c")
	read -r w c r_bm < <(timed restic backup --repo rrepo ref.raw)
	r_b=$(best "$r_b" "$w"); r_bc=$(best "$r_bc" "$c")
	read -r w c g_bm < <(timed borg create --compression zstd,3 brepo::a ref.raw)
	g_b=$(best "$g_b" "$w"); g_bc=$(best "$g_bc" "$c")
done
sync
read -r v_ru v_ruc _ < <(timed ./vdisk restore --repo vrepo -t unsafe -O raw latest out.raw)
rm -f out.raw; sync
read -r v_r v_rc v_rm < <(timed ./vdisk restore --repo vrepo -O raw latest out.raw)
read -r r_r r_rc r_rm < <(timed restic restore --repo rrepo latest --target rout)
mkdir -p bout
read -r g_r g_rc g_rm < <(cd bout && timed borg extract ../brepo::a)
cmp -s out.raw ref.raw && echo "vdisk restore equals the source" || echo "vdisk restore DIFFERS"
du_v=$(du -sm vrepo | cut -f1); du_r=$(du -sm rrepo | cut -f1); du_g=$(du -sm brepo | cut -f1)
printf '%-28s %9s %9s %9s %13s %13s\n' "reference disk, local repo" vdisk restic borg "restic/vdisk" "borg/vdisk"
row() { # LABEL UNIT V R G
	printf '%-28s %8s%s %8s%s %8s%s %12sx %12sx\n' "$1" "$3" "$2" "$4" "$2" "$5" "$2" "$(ratio "$4" "$3")" "$(ratio "$5" "$3")"
}
row "full backup, wall (best)" s "$v_b" "$r_b" "$g_b"
row "full backup, CPU (best)" s "$v_bc" "$r_bc" "$g_bc"
row "restore not synced, wall" s "$v_ru" "$r_r" "$g_r"
row "restore not synced, CPU" s "$v_ruc" "$r_rc" "$g_rc"
printf '%-28s %8ss %9s %9s   (CPU %ss; vdisk syncs by default, restic and borg do not)\n' "restore synced, wall" "$v_r" - - "$v_rc"
printf '%-28s %7sM %8sM %8sM\n' "peak RSS backup" "$((v_bm/1024))" "$((r_bm/1024))" "$((g_bm/1024))"
printf '%-28s %7sM %8sM %8sM\n' "peak RSS restore" "$((v_rm/1024))" "$((r_rm/1024))" "$((g_rm/1024))"
printf '%-28s %7sM %8sM %8sM\n' "repository size" "$du_v" "$du_r" "$du_g"
rm -rf out.raw rout bout

# Incrementals through a dirty bitmap (qemu-nbd serving a qcow2 of the
# reference disk): 1% of the disk rewritten at random places, in whole
# 4 MiB regions and in 64 KiB blocks. Changed bytes are what the bitmap
# reports (the union of the writes, at its 64 KiB granularity).
rm -f inc.qcow2 nbd.sock
qemu-img convert -f raw -O qcow2 ref.raw inc.qcow2
nbdback() {
	qemu-nbd -r -t -e 4 -f qcow2 -B b0 -k "$work/nbd.sock" inc.qcow2 & local p=$!
	for _ in $(seq 100); do [ -S nbd.sock ] && break; sleep 0.05; done
	/usr/bin/time -f "%e %U %S %M" -o t.txt ./vdisk backup --repo vrepo --progress none --output=json --bitmap b0 "nbd+unix:///?socket=$work/nbd.sock" >inc.json
	kill $p; wait $p 2>/dev/null || true
	rm -f nbd.sock
}
qemu-img bitmap --add -g 64K inc.qcow2 b0
nbdback
qemu-img bitmap --clear inc.qcow2 b0
scatter() { # BLOCKSIZE COUNT
	local cmds=()
	for i in $(seq "$2"); do cmds+=(-c "write -P $((i % 250 + 1)) $(( (RANDOM * 32768 + RANDOM) % ((4<<30) / $1) * $1 )) $1"); done
	qemu-io -f qcow2 "${cmds[@]}" inc.qcow2 >/dev/null
}
for bs in $((4<<20)) $((64<<10)); do
	n=$(( (4<<30) / 100 / bs ))
	scatter $bs $n
	nbdback
	qemu-img bitmap --clear inc.qcow2 b0
	read -r i_w i_c i_m < <(awk '{printf "%s %.2f %s\n", $1, $2+$3, $4}' t.txt)
	s() { jq ".[0].summary.$1" inc.json; }
	read_b=$(s BytesRead); changed=$(s BytesChanged); chunks=$(s ChunksChanged); newc=$(s NewChunks); parent=$(s BytesFromParent)
	echo "incremental after 1% scattered changes ($n writes of $((bs>>10)) KiB): read $read_b bytes for $changed changed bytes ($(ratio "$read_b" "$changed")x); stored $newc chunks of $chunks changed; $((parent>>20)) MiB taken from the parent's chunks; ${i_w}s, CPU ${i_c}s, peak RSS $((i_m/1024)) MiB"
done

# Memory on a 2 TiB sparse disk with data spread over it.
rm -f big.vmdk
./vdisk create -f vmdk big.vmdk 2047G >/dev/null
cmds=()
for i in $(seq 0 63); do cmds+=(-c "write -P $((i + 1)) $((i * (31<<30))) 4M"); done
qemu-io -f vmdk "${cmds[@]}" big.vmdk >/dev/null
read -r v_big v_bigc v_bigm < <(timed ./vdisk backup --repo vrepo --progress none big.vmdk)
echo "backup of a 2 TiB sparse disk (256 MiB of data in 64 places; 2047 GiB, the monolithicSparse limit): ${v_big}s, CPU ${v_bigc}s, peak RSS $((v_bigm/1024)) MiB"
rm -f t.txt inc.json
