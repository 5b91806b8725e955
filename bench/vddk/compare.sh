#!/usr/bin/env bash
# Compares reading a disk through nbdkit's VDDK plugin over vdisk's
# libvixDiskLib with reading it through `vdisk export`: nbdcopy reads the
# reference disk (4 GiB virtual holding 1 GiB of scattered random data,
# monolithicSparse) from a local file, and from a vdisk host over nbdssl,
# and the ratio (plugin time / vdisk export time) is printed. Target: 1.3
# or less.
#
#   bash bench/vddk/compare.sh [WORKDIR]
#
# Needs gcc, nbdkit, nbdkit-plugin-dev, qemu-img, nbdcopy, openssl, and
# nbdkit's VDDK plugin sources at ../shared/peers/nbdkit-vddk (or
# $VDISK_SHARED/peers/nbdkit-vddk).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/dev/shm/vdisk-bench-vddk}
shared=${VDISK_SHARED:-}
for d in "$root/../shared" "$root/../../shared"; do
	[ -n "$shared" ] || { [ -x "$d/peers/nbdkit-vddk/build.sh" ] && shared=$d; } || true
done
[ -n "$shared" ] || { echo "nbdkit-vddk sources not found; set VDISK_SHARED"; exit 1; }
for tool in gcc nbdkit qemu-img nbdcopy openssl; do
	command -v $tool >/dev/null || { echo "$tool is needed"; exit 1; }
done
mkdir -p "$work"
cd "$root"
go build -o "$work/vdisk" ./cmd/vdisk
go build -o "$work/gen" ./bench/convert/gen
go run ./cmd/libvixdisklib/install "$work/vddk" >/dev/null
bash "$shared/peers/nbdkit-vddk/build.sh" "$work/plugin" >/dev/null
plugin=$work/plugin/nbdkit-vddk-plugin.so
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse ref.raw ref.vmdk

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f v.sock; }
trap cleanup EXIT

best() { # best of three wall times of "$@"
	local b=""
	for _ in 1 2 3; do
		/usr/bin/time -f "%e" -o t.txt "$@" >/dev/null 2>&1
		t=$(cat t.txt)
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}

# Local file.
./vdisk export --read-only --socket v.sock ref.vmdk 2>/dev/null & pids+=($!)
sleep 1
e_local=$(best nbdcopy "nbd+unix:///?socket=$work/v.sock" null:)
p_local=$(best nbdkit -r -U - "$plugin" libdir="$work/vddk" file="$work/ref.vmdk" --run 'nbdcopy "$uri" null:')

# A host: the reference disk in a VM's disk, read over nbdssl.
rm -rf host && mkdir -m 700 host
printf 'bench password' >pw
./vdisk serve --data-dir host/data --listen 127.0.0.1:18443 --nbd-listen 127.0.0.1:18809 \
	--admin-password-file pw >host/log 2>&1 & pids+=($!)
for _ in $(seq 50); do [ -f host/data/tls/server.crt ] && break; sleep 0.2; done
sleep 1
tp=$(openssl x509 -in host/data/tls/server.crt -noout -fingerprint -sha256 | cut -d= -f2)
tp1=$(openssl x509 -in host/data/tls/server.crt -noout -fingerprint -sha1 | cut -d= -f2)
export VDISK_CONFIG_DIR=$work/host/cfg VDISK_PASSWORD='bench password'
./vdisk login --server 127.0.0.1:18443 --thumbprint "$tp" --user admin >/dev/null
./vdisk vm create bench >/dev/null
./vdisk vm add-disk bench scsi0:0 4G >/dev/null
./vdisk convert -n -f vmdk ref.vmdk vdisk:vm/bench/scsi0:0
dsp=$(./vdisk vm show --output=json bench 2>/dev/null | sed -n 's/.*"datastorePath": *"\([^"]*\)".*/\1/p' | head -1)
moref=$(./vdisk vm show --output=json bench 2>/dev/null | sed -n 's/.*"moref": *"\([^"]*\)".*/\1/p' | head -1)
mkdir -p ca && cp host/data/tls/server.crt ca/ca-cert.pem
export_uri() { ./vdisk ticket create --vm bench --key scsi0:0 --mode ro 2>/dev/null | grep -o 'nbds://[^ ]*'; }
e_remote=$(best bash -c "nbdcopy \"\$(cd $work && VDISK_CONFIG_DIR=$VDISK_CONFIG_DIR ./vdisk ticket create --vm bench --key scsi0:0 --mode ro | grep -o 'nbds://[^ ]*')?tls-certificates=$work/ca\" null:")
p_remote=$(best nbdkit -r -U - "$plugin" libdir="$work/vddk" server=127.0.0.1 port=18443 user=admin password=+"$work/pw" \
	thumbprint="$tp1" vm=moref="$moref" file="$dsp" transports=nbdssl --run 'nbdcopy "$uri" null:')

printf '%-36s %12s %12s %8s\n' "nbdcopy reading ref.vmdk" "vdisk export" "vddk plugin" ratio
printf '%-36s %11ss %11ss %7sx\n' "local file" "$e_local" "$p_local" "$(awk "BEGIN{printf \"%.2f\", $p_local/$e_local}")"
printf '%-36s %11ss %11ss %7sx\n' "host, nbdssl" "$e_remote" "$p_remote" "$(awk "BEGIN{printf \"%.2f\", $p_remote/$e_remote}")"
rm -f t.txt
