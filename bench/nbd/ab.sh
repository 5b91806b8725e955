#!/usr/bin/env bash
# A/B of two vdisk binaries serving the same image: nbdcopy reads it from
# `vdisk export` of each, over a Unix socket, TCP and TLS, ROUNDS times
# interleaved, and the lowest server CPU seconds per GiB of data (from
# /proc/PID/stat) and best wall time of each are printed. For checking a
# change to the server's hot path on a noisy machine:
#
#   bash bench/nbd/ab.sh OLD-VDISK NEW-VDISK IMAGE PKI-DIR [ROUNDS] [DATA-GIB]
#
# PKI-DIR holds server-cert.pem, server-key.pem and ca-cert.pem (as
# compare.sh makes them).
set -euo pipefail
old=$1 new=$2 img=$3 pki=$4 rounds=${5:-5} gib=${6:-1}
tk=$(getconf CLK_TCK)
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
declare -A pid uri wall scpu
port=23000
for v in old new; do
	bin=$old
	[ $v = new ] && bin=$new
	"$bin" export --read-only --socket "$tmp/$v.sock" "$img" 2>/dev/null & pid[$v,unix]=$!
	uri[$v,unix]="nbd+unix:///?socket=$tmp/$v.sock"
	port=$((port + 1))
	"$bin" export --read-only --bind 127.0.0.1:$port "$img" 2>/dev/null & pid[$v,tcp]=$!
	uri[$v,tcp]="nbd://127.0.0.1:$port"
	port=$((port + 1))
	"$bin" export --read-only --bind 127.0.0.1:$port --tls-cert "$pki/server-cert.pem" --tls-key "$pki/server-key.pem" "$img" 2>/dev/null & pid[$v,tls]=$!
	uri[$v,tls]="nbds://127.0.0.1:$port?tls-certificates=$pki"
	pids+=("${pid[$v,unix]}" "${pid[$v,tcp]}" "${pid[$v,tls]}")
done
sleep 1
for _ in $(seq "$rounds"); do
	for kind in unix tcp tls; do
		for v in old new; do
			p=${pid[$v,$kind]}
			s0=$(awk '{print $14+$15}' "/proc/$p/stat")
			/usr/bin/time -f "%e" -o "$tmp/t" nbdcopy "${uri[$v,$kind]}" null:
			s1=$(awk '{print $14+$15}' "/proc/$p/stat")
			w=$(cat "$tmp/t")
			s=$(awk "BEGIN{print ($s1 - $s0) / $tk / $gib}")
			k=$v,$kind
			if [ -z "${wall[$k]:-}" ] || awk "BEGIN{exit !($w < ${wall[$k]})}"; then wall[$k]=$w; fi
			if [ -z "${scpu[$k]:-}" ] || awk "BEGIN{exit !($s < ${scpu[$k]})}"; then scpu[$k]=$s; fi
		done
	done
done
printf '%-5s %-24s %-24s\n' via "old: wall s / CPU s/GiB" "new: wall s / CPU s/GiB"
for kind in unix tcp tls; do
	printf '%-5s %5.2f / %4.2f %14s %5.2f / %4.2f\n' $kind "${wall[old,$kind]}" "${scpu[old,$kind]}" "" "${wall[new,$kind]}" "${scpu[new,$kind]}"
done
