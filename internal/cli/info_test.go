package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/format/vmdk"
)

// writeVMDK writes p at each offset of the VMDK at path.
func writeVMDK(t *testing.T, path string, p []byte, offs ...int64) {
	t.Helper()
	d, err := vmdk.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range offs {
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// allocatedBytes sums st_blocks × 512 over files.
func allocatedBytes(t *testing.T, files ...string) int64 {
	t.Helper()
	var n int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += allocatedOnDisk(st)
	}
	return n
}

func infoJSON(t *testing.T, args ...string) imageInfo {
	t.Helper()
	out := mustRun(t, append([]string{"info", "--output=json"}, args...)...)
	var in imageInfo
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatalf("info %v: %v\n%s", args, err, out)
	}
	return in
}

// TestInfoActualSize checks that actual-size and the human "disk size" are
// the bytes allocated to the image's files on the host, not their apparent
// sizes: a new thin disk of 1 GiB takes a few KiB.
func TestInfoActualSize(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		sub   string
		files []string
	}{
		{"monolithicSparse", []string{"monolithicSparse.vmdk"}},
		{"monolithicFlat", []string{"monolithicFlat.vmdk", "monolithicFlat-flat.vmdk"}},
		{"twoGbMaxExtentSparse", []string{"twoGbMaxExtentSparse.vmdk", "twoGbMaxExtentSparse-s001.vmdk"}},
		{"vmfsThin", []string{"vmfsThin.vmdk", "vmfsThin-flat.vmdk"}},
	} {
		t.Run(tc.sub, func(t *testing.T) {
			img := filepath.Join(dir, tc.sub+".vmdk")
			mustRun(t, "create", "-f", "vmdk", "-o", "subformat="+tc.sub, img, "1G")
			var paths []string
			for _, f := range tc.files {
				paths = append(paths, filepath.Join(dir, f))
			}
			want := allocatedBytes(t, paths...)
			in := infoJSON(t, img)
			if in.ActualSize == nil || *in.ActualSize != want || want > 1<<20 {
				t.Fatalf("actual-size %v, want %d (st_blocks × 512 of %v) and under 1 MiB", in.ActualSize, want, tc.files)
			}
			human := mustRun(t, "info", img)
			if line := "\ndisk size: " + qemuSize(want) + "\n"; !strings.Contains(human, line) {
				t.Errorf("human info lacks %q:\n%s", line, human)
			}
		})
	}
}

// TestInfoDelta checks a child's info: the backing keys, and sizes that are
// the delta's own, not the chain's.
func TestInfoDelta(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	child := filepath.Join(dir, "child.vmdk")
	mustRun(t, "create", "-f", "vmdk", base, "64M")
	writeVMDK(t, base, bytes.Repeat([]byte{1}, 4<<20), 0)
	mustRun(t, "create", "-f", "vmdk", "-b", base, child)
	writeVMDK(t, child, bytes.Repeat([]byte{2}, 64<<10), 8<<20)

	in := infoJSON(t, child)
	if in.Backing != "base.vmdk" || in.FullBacking != base || in.BackingFormat != "vmdk" {
		t.Errorf("backing keys: backing-filename %q, full-backing-filename %q, backing-filename-format %q; want base.vmdk, %s, vmdk",
			in.Backing, in.FullBacking, in.BackingFormat, base)
	}
	if want := allocatedBytes(t, child); in.ActualSize == nil || *in.ActualSize != want {
		t.Errorf("actual-size %v, want %d (the child's file alone)", in.ActualSize, want)
	}
	if in.VDisk == nil || in.VDisk.AllocatedSize != 64<<10 {
		t.Errorf("vdisk-extras %+v: want allocated-size %d, the child's own data", in.VDisk, 64<<10)
	}
	fs := in.FormatSpecific
	if fs == nil || fs.Type != "vmdk" || fs.Data.ParentCID == 0xffffffff || len(fs.Data.Extents) != 1 || fs.Data.Extents[0].Filename != child {
		t.Errorf("format-specific %+v", fs)
	}

	// --backing-chain lists every image, each described on its own.
	var list []imageInfo
	if err := json.Unmarshal([]byte(mustRun(t, "info", "--backing-chain", "--output=json", child)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Filename != child || list[1].Filename != base || list[1].Backing != "" ||
		list[1].FormatSpecific.Data.CID != fs.Data.ParentCID || *list[1].ActualSize != allocatedBytes(t, base) ||
		list[1].VDisk.AllocatedSize != 4<<20 {
		t.Errorf("info --backing-chain: %+v", list)
	}
	human := mustRun(t, "info", child)
	if !strings.Contains(human, "backing file: base.vmdk (actual path: "+base+")\nbacking file format: vmdk\n") {
		t.Errorf("human info of a child:\n%s", human)
	}

	// Like qemu-img info, a child whose parent is missing is described.
	if err := os.Rename(base, base+".moved"); err != nil {
		t.Fatal(err)
	}
	in = infoJSON(t, child)
	if in.Backing != "base.vmdk" || in.FullBacking != base || in.VDisk.AllocatedSize != 64<<10 {
		t.Errorf("info of a child without its parent: %+v", in)
	}
	if _, _, code := run(t, "info", "--backing-chain", child); code != ExitNotFound {
		t.Errorf("info --backing-chain of a child without its parent: exit %d, want %d", code, ExitNotFound)
	}
}

// TestInfoJSONTypes checks the JSON value types scripts written for
// qemu-img rely on: numeric CIDs, a boolean dirty flag, extents as objects.
func TestInfoJSONTypes(t *testing.T) {
	img := filepath.Join(t.TempDir(), "t.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", img, "8M")
	var m map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "info", "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"virtual-size", "actual-size"} {
		if _, ok := m[k].(float64); !ok {
			t.Errorf("%s = %#v, want a number", k, m[k])
		}
	}
	if v, ok := m["dirty-flag"].(bool); !ok || v {
		t.Errorf("dirty-flag = %#v, want false", m["dirty-flag"])
	}
	if _, ok := m["cluster-size"]; ok {
		t.Errorf("cluster-size of a flat image: %v, want none (as qemu)", m["cluster-size"])
	}
	data := m["format-specific"].(map[string]any)["data"].(map[string]any)
	for _, k := range []string{"cid", "parent-cid"} {
		if _, ok := data[k].(float64); !ok {
			t.Errorf("format-specific.data.%s = %#v, want a number", k, data[k])
		}
	}
	ext := data["extents"].([]any)[0].(map[string]any)
	if ext["format"] != "FLAT" || ext["filename"] != strings.TrimSuffix(img, ".vmdk")+"-f001.vmdk" || ext["cluster-size"] != nil {
		t.Errorf("extent %v", ext)
	}
}

// TestQemuSize checks sizes formatted as qemu-img info prints them.
func TestQemuSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {999, "999 B"}, {1000, "0.977 KiB"}, {4096, "4 KiB"}, {12288, "12 KiB"},
		{1204224, "1.15 MiB"}, {2301952, "2.2 MiB"}, {8433664, "8.04 MiB"}, {64 << 20, "64 MiB"},
		{2 << 40, "2 TiB"}, {5 << 30, "5 GiB"}, {1<<63 - 1, "8 EiB"},
	} {
		if got := qemuSize(tc.n); got != tc.want {
			t.Errorf("qemuSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
