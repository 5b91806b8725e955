#!/usr/bin/env bash
# Durable writes against the device's floor, on a real filesystem and on
# tmpfs, in one run: for each target format, the reference disk (a 4 GiB
# monolithicSparse VMDK holding 1 GiB of scattered data) is written by
#
#   dd-sync   dd conv=fsync,sparse of the same bytes (the floor: what the
#             device takes to store them durably)
#   dd-cache  the same dd without fsync (the page cache's floor)
#   qemu-wb   qemu-img convert -t writeback (durable)
#   qemu      qemu-img convert with its default cache (not synced)
#   vdisk     vdisk convert (default: durable)
#   unsafe    vdisk convert -t unsafe (not synced)
#   clone     the kit's Clone (durable)
#
# "The same bytes" are the files vdisk itself writes for that format
# (made once with -t unsafe, then copied by dd file by file); for raw it is
# the issue's own floor, dd of ref.raw. dd reads every byte, holes
# included (4 GiB for raw), so cp-sync (`cp --sparse=always`, which reads
# only data, then `sync FILE`) is shown too: the tighter floor. Then
# `vdisk create` of a preallocated (vmfs) disk against fallocate plus
# fsync (ext4 only: fallocate on tmpfs takes the memory), and a restore of
# the reference disk from a local repository into a new raw image against
# dd-sync of the raw bytes and against restore -t unsafe.
#
#   bash bench/convert/durable.sh [ROUNDS]
#
# Each format's cases run ROUNDS times (default 5), interleaved, with
# `sync` before each case, and the fastest run of each case counts: the
# machine is shared. The sources live in EXT4DIR/src, read from the page
# cache whichever filesystem is written, and are removed at the end unless
# KEEP=1. EXT4DIR (default /tmp/vdisk-durable) and TMPFSDIR (default
# /dev/shm/vdisk-durable; TMPFSDIR= skips it) choose the directories,
# FORMATS the targets, CASES and EXTRAS the cases (EXTRAS= skips create
# and restore), VDISK=PATH another vdisk build (for a before/after
# comparison). Ratios are to dd-sync and cp-sync (vdisk, clone, qemu-wb)
# and to qemu's default (unsafe): below 1 is faster.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=${1:-5}
formats=${FORMATS:-raw monolithicSparse twoGbMaxExtentSparse monolithicFlat streamOptimized seSparse}
dirs=("${EXT4DIR:-/tmp/vdisk-durable}")
[ -n "${TMPFSDIR-x}" ] && dirs+=("${TMPFSDIR:-/dev/shm/vdisk-durable}") # TMPFSDIR= skips tmpfs
command -v qemu-img >/dev/null || { echo "qemu-img is needed (apt-get install qemu-utils)"; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)"; exit 1; }

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
echo "building vdisk, clone and the generator"
go build -o "$bin/vdisk" "$root/cmd/vdisk"
go build -o "$bin/clone" "$root/bench/convert/clone"
go build -o "$bin/gen" "$root/bench/convert/gen"
vd=${VDISK:-$bin/vdisk} # VDISK=PATH measures another build (a before/after comparison)

# target FORMAT: the output name and the -O/-o arguments for it.
target() {
	case $1 in
	raw) echo "out.raw -O raw" ;;
	*) echo "out.vmdk -O vmdk -o subformat=$1" ;;
	esac
}
clonetype() { [ "$1" = raw ] && echo raw || echo "$1"; }

# cmd FORMAT CASE: the shell command of one case, or "" when the case does
# not apply (qemu-img makes no seSparse).
cmd() {
	local f=$1 c=$2 out args
	read -r out args <<<"$(target "$f")"
	case $c in
	dd-sync | dd-cache)
		local conv=sparse
		[ "$c" = dd-sync ] && conv=fsync,sparse
		if [ "$f" = raw ]; then
			echo "dd if=$src/ref.raw of=out.raw bs=1M conv=$conv status=none"
		else
			echo "for s in $src/same-$f/*; do dd if=\$s of=out.\${s##*/} bs=1M conv=$conv status=none; done"
		fi
		;;
	cp-sync)
		local from="$src/ref.raw" && [ "$f" = raw ] || from="$src/same-$f/*"
		echo "for s in $from; do cp --sparse=always \$s out.\${s##*/} && sync out.\${s##*/}; done"
		;;
	qemu-wb) [ "$f" = seSparse ] || echo "qemu-img convert -t writeback -f vmdk $args $src/ref.vmdk $out" ;;
	qemu) [ "$f" = seSparse ] || echo "qemu-img convert -f vmdk $args $src/ref.vmdk $out" ;;
	vdisk) echo "$vd convert -f vmdk $args $src/ref.vmdk $out" ;;
	unsafe) echo "$vd convert -t unsafe -f vmdk $args $src/ref.vmdk $out" ;;
	clone) [ "$f" = streamOptimized ] || echo "$bin/clone $src/ref.vmdk $out $(clonetype "$f")" ;; # Clone reopens what it creates: a stream cannot be
	esac
}
cases=${CASES:-dd-sync cp-sync dd-cache qemu-wb qemu vdisk unsafe clone}
extras=${EXTRAS-create-floor create qemu-create restore-floor restore restore-unsafe}
xcmd() {
	case $1 in
	create-floor) echo "fallocate -l 4G out-flat.vmdk && sync out-flat.vmdk" ;;
	create) echo "$vd create -f vmdk -o subformat=vmfs out.vmdk 4G" ;;
	qemu-create) echo "qemu-img create -q -f raw -o preallocation=falloc out.raw 4G" ;;
	restore-floor) echo "dd if=$src/ref.raw of=out.raw bs=1M conv=fsync,sparse status=none" ;;
	restore) echo "$vd restore --repo $src/repo --password-file $src/pw -O raw \$(cat $src/point) out.raw" ;;
	restore-unsafe) echo "$vd restore --repo $src/repo --password-file $src/pw -O raw -t unsafe \$(cat $src/point) out.raw" ;;
	esac
}

# timeit KEY CMD: runs CMD after a sync, keeps the fastest wall time.
declare -A best cpu
timeit() {
	local key=$1 c=$2
	rm -f out.* out-*
	sync
	/usr/bin/time -f "%e %U %S" -o t.txt bash -c "$c" >/dev/null 2>err.txt || { echo "failed: $c" >&2; cat err.txt >&2; return 0; }
	read -r t u s <t.txt
	if [ -z "${best[$key]:-}" ] || awk "BEGIN{exit !($t < ${best[$key]})}"; then
		best[$key]=$t
		cpu[$key]=$(awk "BEGIN{printf \"%.2f\", $u + $s}")
	fi
}
# row FORMAT: prints the format's line of the table.
row() {
	local f=$1 c k
	printf '%-21s' "$f"
	for c in $cases; do
		k="$f/$c"
		if [ -n "${best[$k]:-}" ]; then printf ' %6s (%4s)' "${best[$k]}" "${cpu[$k]}"; else printf ' %13s' -; fi
	done
	printf ' %8s %8s %8s %8s %8s\n' "$(ratio "${best[$f/vdisk]:-}" "${best[$f/dd-sync]:-}")" \
		"$(ratio "${best[$f/vdisk]:-}" "${best[$f/cp-sync]:-}")" \
		"$(ratio "${best[$f/clone]:-}" "${best[$f/dd-sync]:-}")" \
		"$(ratio "${best[$f/qemu-wb]:-}" "${best[$f/dd-sync]:-}")" \
		"$(ratio "${best[$f/unsafe]:-}" "${best[$f/qemu]:-}")"
}
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN{printf \"%.2fx\", $1 / ($2 > 0 ? $2 : 0.001)}" || echo -; }

# The sources (reference disk, "same bytes", repository) live in the first
# directory, read from the page cache whichever directory is written:
# tmpfs is memory, and holds only the output.
src=${dirs[0]}/src
mkdir -p "$src"
(
	cd "$src"
	[ -f ref.raw ] || "$bin/gen" -o ref.raw -size $((4 << 30)) -data $((1 << 30))
	[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse ref.raw ref.vmdk
	if [ ! -f point ]; then
		rm -rf repo && echo bench >pw
		$vd repo init --repo repo --password-file pw >/dev/null
		$vd backup --repo repo --password-file pw --progress none ref.vmdk >/dev/null
		$vd points --repo repo --password-file pw --output=json | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p' | head -1 >point
	fi
)
for dir in "${dirs[@]}"; do
	mkdir -p "$dir"
	cd "$dir"
	fstype=$(df -T . | awk 'NR == 2 {print $2}')
	best=() cpu=()
	echo
	echo "== $dir ($fstype): best of $rounds, seconds (CPU seconds of the best run in parentheses)"
	printf '%-21s' format
	for c in $cases; do printf ' %13s' "$c"; done
	printf ' %8s %8s %8s %8s %8s\n' vdisk/dd vdisk/cp clone/dd qemu-wb/dd unsafe/q
	# One format at a time, its cases interleaved round by round.
	for f in $formats; do
		if [ "$f" != raw ] && [ ! -d "$src/same-$f" ]; then
			mkdir "$src/same-$f"
			read -r _ args <<<"$(target "$f")"
			(cd "$src/same-$f" && $vd convert -t unsafe -f vmdk $args ../ref.vmdk out.vmdk)
		fi
		for r in $(seq "$rounds"); do
			for c in $cases; do
				x=$(cmd "$f" "$c")
				[ -n "$x" ] && timeit "$f/$c" "$x"
			done
		done
		row "$f"
	done
	for r in $(seq "$rounds"); do
		for c in $extras; do
			# fallocate on tmpfs takes 4 GiB of memory: not there.
			[ "$fstype" = tmpfs ] && [[ $c == *create* ]] && continue
			timeit "x/$c" "$(xcmd "$c")"
		done
	done
	[ -z "${best[x/create]:-}" ] ||
		echo "create vmfs (preallocated): fallocate+fsync ${best[x/create-floor]}s, vdisk ${best[x/create]}s ($(ratio "${best[x/create]}" "${best[x/create-floor]}")), qemu-img raw falloc ${best[x/qemu-create]}s"
	[ -z "${best[x/restore]:-}" ] ||
		echo "restore to raw: dd-sync ${best[x/restore-floor]}s, vdisk restore ${best[x/restore]}s ($(ratio "${best[x/restore]}" "${best[x/restore-floor]}")), -t unsafe ${best[x/restore-unsafe]}s (durable/unsafe $(ratio "${best[x/restore]}" "${best[x/restore-unsafe]}"))"
	rm -f out.* out-* t.txt err.txt
	cd - >/dev/null
done
[ -n "${KEEP:-}" ] || rm -rf "$src" "${dirs[@]:1}" # KEEP=1 keeps the reference files
