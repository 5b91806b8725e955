#!/usr/bin/env bash
# Compares `vdisk extract` and `vdisk ls -R` with the kernel's own path on
# the same filesystem: a 1 GiB tree of mixed file sizes in an ext4 volume
# (mkfs.ext4 -d) inside a VMDK, extracted with vdisk, against a loop mount
# of the raw image plus `cp -a`; then listing 100,000 files both ways.
# Needs root (the loop mount), e2fsprogs and qemu-utils.
#
#   sudo bash bench/files/compare.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/tmp/vdisk-bench-files}
export PATH="$PATH:/usr/sbin:/sbin"
for tool in mkfs.ext4 qemu-img /usr/bin/time; do
	command -v $tool >/dev/null || { echo "$tool is needed (apt-get install e2fsprogs qemu-utils time)"; exit 1; }
done
mkdir -p "$work"
go build -o "$work/vdisk" "$root/cmd/vdisk"
cd "$work"
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() { mountpoint -q "$mnt" && umount "$mnt" || true; }
trap cleanup EXIT

if [ ! -f tree.vmdk ]; then
	rm -rf src && mkdir -p src
	# Mixed sizes: many small files, some medium, a few large, ~1 GiB.
	python3 - <<'PY'
import os, random
random.seed(1)
total = 0
i = 0
while total < (1 << 30):
    d = "src/d%03d/e%02d" % (i % 200, i % 17)
    os.makedirs(d, exist_ok=True)
    r = random.random()
    n = random.randint(0, 8 << 10) if r < 0.8 else random.randint(8 << 10, 1 << 20) if r < 0.98 else random.randint(1 << 20, 64 << 20)
    with open("%s/f%06d" % (d, i), "wb") as f:
        f.write(os.urandom(n))
    total += n
    i += 1
print(i, "files", total, "bytes")
PY
	mkfs.ext4 -q -d src -b 4096 tree.raw 2G
	qemu-img convert -f raw -O vmdk tree.raw tree.vmdk
	rm -rf many && mkdir -p many && python3 -c "
import os
for i in range(100000):
    d='many/%03d'%(i%100); os.makedirs(d, exist_ok=True); open('%s/f%06d'%(d,i),'w').close()"
	mkfs.ext4 -q -d many -N 120000 many.raw 1G
	qemu-img convert -f raw -O vmdk many.raw many.vmdk
fi
files=$(find src -type f | wc -l)

timed() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; /usr/bin/time -f "%e %M" -o t.txt "$@" >/dev/null 2>&1; cat t.txt; }
rm -rf outv outk
read -r v_x v_xm < <(timed ./vdisk extract tree.vmdk / outv)
mount -o loop,ro tree.raw "$mnt"
read -r k_x _ < <(timed cp -a "$mnt/." outk)
umount "$mnt"
diff -r outk outv >/dev/null && echo "vdisk extract equals cp -a from the kernel mount" || echo "vdisk extract DIFFERS from the kernel mount"
read -r v_l v_lm < <(timed ./vdisk ls -R many.vmdk /)
mount -o loop,ro many.raw "$mnt"
read -r k_l _ < <(timed ls -lR "$mnt")
umount "$mnt"
printf '%-44s %9s %9s %7s\n' "" kernel vdisk ratio
printf '%-44s %8ss %8ss %6sx\n' "extract 1 GiB tree ($files files)" "$k_x" "$v_x" "$(awk "BEGIN{printf \"%.2f\", $v_x/$k_x}")"
printf '%-44s %8ss %8ss %6sx\n' "list 100,000 files (ls -lR / vdisk ls -R)" "$k_l" "$v_l" "$(awk "BEGIN{printf \"%.2f\", $v_l/$k_l}")"
echo "vdisk peak RSS: extract $((v_xm/1024)) MiB, listing $((v_lm/1024)) MiB"
rm -rf outv outk t.txt
