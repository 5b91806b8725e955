package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

var ctx = context.Background()

// run runs a vdisk command line and returns stdout, stderr and the exit
// code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := run(t, args...)
	if code != 0 {
		t.Fatalf("vdisk %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// sample writes a raw file with scattered data and returns its path and
// content.
func sample(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	b := make([]byte, 8<<20)
	for _, off := range []int{0, 3 << 20, 5<<20 + 4096, 8<<20 - 512} {
		for i := off; i < min(off+200000, len(b)); i++ {
			b[i] = byte(i%251 + 1)
		}
	}
	p := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"4096", 4096}, {"1K", 1024}, {"10G", 10 << 30}, {"1.5M", 3 << 19}, {"2T", 2 << 40}, {"4GiB", 4 << 30}, {"512B", 512},
	}
	for _, tt := range tests {
		if got, err := parseSize(tt.in); err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1Q", "1e30G"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
}

func TestCreateInfoConvertCompare(t *testing.T) {
	dir := t.TempDir()
	src, content := sample(t, dir)
	for _, sub := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "streamOptimized", "vmfsThin"} {
		t.Run(sub, func(t *testing.T) {
			dst := filepath.Join(dir, sub+".vmdk")
			mustRun(t, "convert", "-O", "vmdk", "-o", "subformat="+sub+",adapter_type=lsilogic", src, dst)
			out := mustRun(t, "info", "--output=json", dst)
			var info imageInfo
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatal(err)
			}
			want := sub
			if sub == "vmfsThin" {
				want = "vmfs" // the descriptor's createType; the extras name the subformat
			}
			x := info.VDisk
			if info.Format != "vmdk" || info.VirtualSize != int64(len(content)) || info.FormatSpecific == nil || info.FormatSpecific.Data.CreateType != want || x == nil || x.AdapterType != "lsilogic" {
				t.Errorf("info = %+v", info)
			}
			if x != nil && (x.AllocatedSize == 0 || x.AllocatedSize >= int64(len(content))) {
				t.Errorf("allocated %d of %d: not thin", x.AllocatedSize, len(content))
			}
			if out := mustRun(t, "compare", src, dst); !strings.Contains(out, "identical") {
				t.Errorf("compare: %s", out)
			}
			back := filepath.Join(dir, sub+".raw")
			mustRun(t, "convert", "-O", "raw", dst, back)
			got, _ := os.ReadFile(back)
			if !bytes.Equal(got, content) {
				t.Errorf("round trip through %s changed the content", sub)
			}
			if sub != "streamOptimized" {
				if out := mustRun(t, "check", dst); !strings.Contains(out, "No errors") {
					t.Errorf("check: %s", out)
				}
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	src, _ := sample(t, dir)
	other := filepath.Join(dir, "other.raw")
	os.WriteFile(other, make([]byte, 8<<20), 0o644)
	if _, _, code := run(t, "compare", src, other); code != ExitDiffer {
		t.Errorf("compare of different images: exit %d, want %d", code, ExitDiffer)
	}
	if _, _, code := run(t, "info", filepath.Join(dir, "missing")); code != ExitNotFound {
		t.Errorf("info of a missing file: exit %d, want %d", code, ExitNotFound)
	}
	if _, _, code := run(t, "frobnicate"); code != ExitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
	if _, _, code := run(t, "create", "-f", "vmdk", "-o", "adapter_type=legacyESX", filepath.Join(dir, "x.vmdk"), "1G"); code != ExitInvalid {
		t.Errorf("legacyESX: exit %d, want %d", code, ExitInvalid)
	}
	if _, _, code := run(t, "create", "-f", "vmdk", filepath.Join(dir, "big.vmdk"), "3T"); code != ExitUnsupported {
		t.Errorf("3 TiB monolithicSparse: exit %d, want %d", code, ExitUnsupported)
	}
	out, _, code := run(t, "info", "--output=json", filepath.Join(dir, "missing"))
	var e map[string]any
	if code != ExitNotFound || json.Unmarshal([]byte(out), &e) != nil || e["code"] != "not found" {
		t.Errorf("JSON error output = %q (exit %d)", out, code)
	}
	if out, _, _ := run(t, "help"); !strings.Contains(out, "exit codes") {
		t.Errorf("help lacks the exit codes:\n%s", out)
	}
	for _, args := range [][]string{{"help", "convert"}, {"convert", "-h"}} {
		out, _, code := run(t, args...)
		if code != ExitOK || !strings.Contains(out, "flags:") || !strings.Contains(out, "-O string") {
			t.Errorf("vdisk %v: exit %d\n%s", args, code, out)
		}
	}
}

func TestMetaResizeChild(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", base, "16M")
	mustRun(t, "meta", base, "adapterType", "buslogic")
	if got := strings.TrimSpace(mustRun(t, "meta", base, "adapterType")); got != "buslogic" {
		t.Errorf("meta get = %q", got)
	}
	if _, _, code := run(t, "meta", base, "noSuchKey"); code != ExitNotFound {
		t.Errorf("meta of an unknown key: exit %d", code)
	}
	mustRun(t, "resize", base, "+16M")
	out := mustRun(t, "info", "--output=json", base)
	if !strings.Contains(out, `"virtual-size": 33554432`) {
		t.Errorf("after resize: %s", out)
	}
	sparse := filepath.Join(dir, "s.vmdk")
	mustRun(t, "create", "-f", "vmdk", sparse, "32M")
	child := filepath.Join(dir, "child.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-b", sparse, child)
	out = mustRun(t, "info", child)
	if !strings.Contains(out, "backing file: s.vmdk (actual path: "+sparse+")\nbacking file format: vmdk\n") {
		t.Errorf("child info:\n%s", out)
	}
	if _, _, code := run(t, "resize", sparse, "+1M"); code != ExitPermission {
		t.Errorf("resizing a disk that has a child: exit %d, want %d", code, ExitPermission)
	}
}

func TestMapChunks(t *testing.T) {
	dir := t.TempDir()
	src, _ := sample(t, dir)
	img := filepath.Join(dir, "m.vmdk")
	mustRun(t, "convert", "-O", "vmdk", src, img)
	var chunks []struct{ Offset, Length int64 }
	if err := json.Unmarshal([]byte(mustRun(t, "map", "--output=json", "--chunk-size", "1M", img)), &chunks); err != nil {
		t.Fatal(err)
	}
	if len(chunks) == 0 {
		t.Fatal("no allocated chunks")
	}
	for _, c := range chunks {
		if c.Offset%(1<<20) != 0 || (c.Length%(1<<20) != 0 && c.Offset+c.Length != 8<<20) {
			t.Errorf("chunk %+v not aligned to 1 MiB", c)
		}
	}
	if _, _, code := run(t, "map", "--chunk-size", "1K", img); code != ExitInvalid {
		t.Errorf("chunk size below 64 KiB: exit %d", code)
	}
}

// TestQemuAgrees checks vdisk's map, compare and convert against qemu-img's
// on the same images.
func TestQemuAgrees(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src, _ := sample(t, dir)
	img := filepath.Join(dir, "q.vmdk")
	testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", src, img)
	ours := dataRanges(decodeMap(t, "vdisk", mustRun(t, "map", "--output=json", img)))
	theirs := dataRanges(decodeMap(t, "qemu-img", testenv.Run(t, "qemu-img", "map", "--output=json", img)))
	if !slices.Equal(ours, theirs) {
		t.Errorf("data ranges differ:\nvdisk %+v\nqemu  %+v", ours, theirs)
	}
	ourRaw := filepath.Join(dir, "ours.raw")
	theirRaw := filepath.Join(dir, "theirs.raw")
	mustRun(t, "convert", "-O", "raw", img, ourRaw)
	testenv.Run(t, "qemu-img", "convert", "-O", "raw", img, theirRaw)
	a, _ := os.ReadFile(ourRaw)
	b, _ := os.ReadFile(theirRaw)
	if !bytes.Equal(a, b) {
		t.Error("vdisk convert and qemu-img convert give different raw images")
	}
	// Both tools agree that a modified copy differs.
	f, _ := os.OpenFile(theirRaw, os.O_RDWR, 0)
	f.WriteAt([]byte{0xee}, 5<<20)
	f.Close()
	if _, _, code := run(t, "compare", img, theirRaw); code != ExitDiffer {
		t.Errorf("vdisk compare: exit %d, want %d", code, ExitDiffer)
	}
}

func TestCheckRepairs(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "r.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-o", "subformat=vmfs", img, "2M")
	os.Remove(img)
	if _, _, code := run(t, "info", img); code != ExitNotFound {
		t.Fatalf("info of a lost descriptor: exit %d", code)
	}
	if _, _, code := run(t, "check", "--rebuild-descriptor", img); code != ExitUsage {
		t.Errorf("--rebuild-descriptor without -r all: exit %d", code)
	}
	out := mustRun(t, "check", "-r", "all", "--rebuild-descriptor", img)
	if !strings.Contains(out, "Rebuilt") || !strings.Contains(out, "No errors") {
		t.Errorf("rebuild: %s", out)
	}
	if _, _, code := run(t, "check", "-r", "all", "--relink", img); code != ExitUsage {
		t.Errorf("--relink without --force: exit %d", code)
	}
}

// TestHelp checks that every command documents itself, through
// 'vdisk help CMD' and 'vdisk CMD -h', and that neither does any work.
func TestHelp(t *testing.T) {
	for _, c := range commands() {
		out := mustRun(t, "help", c.name)
		if !strings.HasPrefix(out, "usage: vdisk "+c.name) || !strings.Contains(out, c.summary) {
			t.Errorf("help %s:\n%s", c.name, out)
		}
		if h := mustRun(t, c.name, "-h"); h != out {
			t.Errorf("%s -h differs from help %s", c.name, c.name)
		}
	}
	if out := mustRun(t, "help"); !strings.Contains(out, "exit codes:") {
		t.Errorf("help has no exit code table:\n%s", out)
	}
	if out := mustRun(t, "version"); !strings.HasPrefix(out, "vdisk version ") {
		t.Errorf("version: %q", out)
	}
}

// TestForeignImageRefused: converting a qcow2 image (which vdisk does not
// read) exits 71 naming the format and writes no target, instead of
// copying the qcow2 container as if it were a raw disk.
func TestForeignImageRefused(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "x.qcow2"), filepath.Join(dir, "x.raw")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "4M")
	_, stderr, code := run(t, "convert", "-O", "raw", src, dst)
	if code != 71 || !strings.Contains(stderr, "qcow2") {
		t.Errorf("convert of a qcow2 image: exit %d, %q; want 71 naming qcow2", code, stderr)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Error("the refused convert left a target")
	}
	if _, _, code := run(t, "convert", "-f", "raw", "-O", "raw", src, dst); code != 0 {
		t.Errorf("convert -f raw: exit %d", code)
	}
}

// TestInfoWarnsTruncated: info says when a sparse extent is shorter than
// the data it references (qemu-img info is silent), and is silent when it
// is whole.
func TestInfoWarnsTruncated(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "t.vmdk")
	src, _ := sample(t, dir)
	mustRun(t, "convert", "-O", "vmdk", src, img)
	if _, stderr, code := run(t, "info", img); code != 0 || strings.Contains(stderr, "truncated") {
		t.Fatalf("info of a whole image: exit %d, %q", code, stderr)
	}
	st, _ := os.Stat(img)
	os.Truncate(img, st.Size()/2)
	_, stderr, code := run(t, "info", img)
	if code != 0 || !strings.Contains(stderr, "is truncated") {
		t.Errorf("info of a truncated image: exit %d, %q; want a warning", code, stderr)
	}
}
