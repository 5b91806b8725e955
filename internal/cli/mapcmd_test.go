package cli

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// qemuEntry is one entry of qemu-img map --output=json.
type qemuEntry struct {
	Start, Length int64
	Depth         int
	Present       bool
	Zero          bool
	Data          bool
	Compressed    bool
	Offset        *int64
}

func mapJSON(t *testing.T, img string) []qemuEntry {
	t.Helper()
	var es []qemuEntry
	out := mustRun(t, "map", "--output=json", img)
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("map --output=json %s: %v\n%s", img, err, out)
	}
	return es
}

// TestMapHuman checks the human map's columns and number forms against
// qemu-img's: C's %#-16x (0 without 0x), only runs stored in a file, runs
// merged only where contiguous in the file.
func TestMapHuman(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "h.raw")
	sparseRaw(t, img, 4<<20, 0, 64<<10, 1<<20)
	want := "Offset          Length          Mapped to       File\n" +
		"0               0x20000         0               " + img + "\n" +
		"0x100000        0x10000         0x100000        " + img + "\n"
	if got := mustRun(t, "map", img); got != want {
		t.Errorf("map %s:\n%s\nwant:\n%s", img, got, want)
	}

	// Grains written out of order: contiguous on the disk, not in the file.
	v := filepath.Join(dir, "h.vmdk")
	mustRun(t, "create", "-f", "vmdk", v, "4M")
	g := bytes.Repeat([]byte{9}, 64<<10)
	writeVMDK(t, v, g, 128<<10, 64<<10)
	want = "Offset          Length          Mapped to       File\n" +
		"0x10000         0x10000         0x20000         " + v + "\n" +
		"0x20000         0x10000         0x10000         " + v + "\n"
	if got := mustRun(t, "map", v); got != want {
		t.Errorf("map %s:\n%s\nwant:\n%s", v, got, want)
	}
}

// TestMapJSONShape checks map's JSON entries: qemu's keys, flat holes as
// data and zero at their offset, sparse holes as absent zeros, a child's
// runs at the depth of the link that holds them, compressed data with no
// offset, and qemu's merging rule.
func TestMapJSONShape(t *testing.T) {
	dir := t.TempDir()
	flat := filepath.Join(dir, "f.vmdk")
	mustRun(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat, "4M")
	writeVMDK(t, flat, bytes.Repeat([]byte{1}, 64<<10), 1<<20)
	off := func(n int64) *int64 { return &n }
	checkEntries(t, flat, mapJSON(t, flat), []qemuEntry{
		{0, 1 << 20, 0, true, true, true, false, off(0)},
		{1 << 20, 64 << 10, 0, true, false, true, false, off(1 << 20)},
		{1<<20 + 64<<10, 3<<20 - 64<<10, 0, true, true, true, false, off(1<<20 + 64<<10)},
	})

	base := filepath.Join(dir, "b.vmdk")
	child := filepath.Join(dir, "c.vmdk")
	mustRun(t, "create", "-f", "vmdk", base, "4M")
	writeVMDK(t, base, bytes.Repeat([]byte{1}, 128<<10), 0)
	mustRun(t, "create", "-f", "vmdk", "-b", base, child)
	writeVMDK(t, child, bytes.Repeat([]byte{2}, 64<<10), 64<<10)
	checkEntries(t, child, mapJSON(t, child), []qemuEntry{
		{0, 64 << 10, 1, true, false, true, false, off(64 << 10)},
		{64 << 10, 64 << 10, 0, true, false, true, false, off(64 << 10)},
		{128 << 10, 4<<20 - 128<<10, 1, false, true, false, false, nil},
	})

	raw := filepath.Join(dir, "s.raw")
	sparseRaw(t, raw, 1<<20, 0)
	stream := filepath.Join(dir, "s.vmdk")
	mustRun(t, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, stream)
	checkEntries(t, stream, mapJSON(t, stream), []qemuEntry{
		{0, 64 << 10, 0, true, false, true, true, nil},
		{64 << 10, 1<<20 - 64<<10, 0, false, true, false, false, nil},
	})
	// The human map cannot show compressed data, as qemu-img's cannot.
	if _, errs, code := run(t, "map", stream); code != ExitUnsupported || !strings.Contains(errs, "compressed") {
		t.Errorf("human map of a streamOptimized image: exit %d, want %d\n%s", code, ExitUnsupported, errs)
	}
	// Every entry on its own line, as qemu prints them.
	out := mustRun(t, "map", "--output=json", child)
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], `[{ "start": 0, "length": 65536, "depth": 1, "present": true, "zero": false, "data": true, "compressed": false, "offset": 65536},`) || !strings.HasSuffix(out, "}]\n") {
		t.Errorf("map --output=json layout:\n%s", out)
	}
}

func checkEntries(t *testing.T, img string, got, want []qemuEntry) {
	t.Helper()
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		g, w := got[i], want[i]
		same = g.Start == w.Start && g.Length == w.Length && g.Depth == w.Depth && g.Present == w.Present &&
			g.Zero == w.Zero && g.Data == w.Data && g.Compressed == w.Compressed &&
			(g.Offset == nil) == (w.Offset == nil) && (g.Offset == nil || *g.Offset == *w.Offset)
	}
	if !same {
		t.Errorf("map %s:\ngot  %s\nwant %s", img, entriesString(got), entriesString(want))
	}
}

func entriesString(es []qemuEntry) string {
	var b strings.Builder
	for _, e := range es {
		o := "-"
		if e.Offset != nil {
			o = cHex(*e.Offset)
		}
		b.WriteString(strings.Join([]string{cHex(e.Start), cHex(e.Length), "d" + string(rune('0'+e.Depth)),
			map[bool]string{true: "present", false: "absent"}[e.Present], map[bool]string{true: "zero", false: "-"}[e.Zero],
			map[bool]string{true: "data", false: "-"}[e.Data], map[bool]string{true: "compressed", false: "-"}[e.Compressed], "@" + o}, " "))
		b.WriteString("; ")
	}
	return b.String()
}
