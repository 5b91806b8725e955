package volume

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// fileDisk is a disk.Disk over a file.
type fileDisk struct{ *os.File }

func (f fileDisk) Size() int64 {
	st, _ := f.Stat()
	return st.Size()
}
func (f fileDisk) Flush() error { return f.Sync() }

func openFile(t *testing.T, path string) fileDisk {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return fileDisk{f}
}

// sfdiskImage makes a 64 MiB image partitioned by sfdisk from script.
func sfdiskImage(t *testing.T, script string) string {
	t.Helper()
	testenv.Tool(t, "sfdisk")
	path := filepath.Join(t.TempDir(), "d.img")
	if err := os.Truncate(path, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	f, _ := os.Create(path)
	f.Truncate(64 << 20)
	f.Close()
	cmd := exec.Command("sfdisk", "-q", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return path
}

// sfdiskTable is what sfdisk --json says of an image.
type sfdiskTable struct {
	PartitionTable struct {
		Label, ID  string
		Partitions []struct {
			Node        string
			Start, Size int64
			Type, UUID  string
			Name        string
		}
	}
}

func sfdiskJSON(t *testing.T, path string) sfdiskTable {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var st sfdiskTable
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// agree checks a table against sfdisk's reading of the same image.
func agree(t *testing.T, path string, got *Table) {
	t.Helper()
	want := sfdiskJSON(t, path).PartitionTable
	if string(got.Scheme) != map[string]string{"dos": "mbr", "gpt": "gpt"}[want.Label] || !strings.EqualFold(got.DiskID, want.ID) {
		t.Errorf("scheme %s id %s; sfdisk says %s %s", got.Scheme, got.DiskID, want.Label, want.ID)
	}
	if len(got.Partitions) != len(want.Partitions) {
		t.Fatalf("%d partitions; sfdisk says %d: %+v", len(got.Partitions), len(want.Partitions), got.Partitions)
	}
	for i, w := range want.Partitions {
		g := got.Partitions[i]
		num, _ := strconv.Atoi(strings.TrimPrefix(w.Node, path))
		typ := w.Type
		if want.Label == "dos" {
			n, _ := strconv.ParseUint(typ, 16, 8)
			typ = fmt.Sprintf("0x%02x", n)
		}
		if g.Number != num || g.Start != w.Start*512 || g.Size != w.Size*512 || !strings.EqualFold(g.Type, typ) ||
			!strings.EqualFold(g.GUID, w.UUID) || g.Name != w.Name {
			t.Errorf("partition %d: %+v; sfdisk says %+v", i, g, w)
		}
	}
}

// TestMBR: primary, extended and logical partitions as sfdisk writes them.
func TestMBR(t *testing.T) {
	path := sfdiskImage(t, "label: dos\n,8M,83,*\n,8M,82\n,,5\n,4M,83\n,4M,8e\n,4M,7\n")
	tab, err := Partitions(context.Background(), openFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	agree(t, path, tab)
	if !tab.Partitions[0].Bootable || tab.Partitions[4].Kind != "linux-lvm" || !tab.Partitions[4].Logical {
		t.Errorf("flags: %+v", tab.Partitions)
	}
}

// TestGPT: a GPT with names, read from the primary copy, and from the
// backup when the primary header or its entry array is damaged.
func TestGPT(t *testing.T) {
	script := "label: gpt\nsize=8M, type=L, name=root\nsize=8M, type=S\ntype=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=\"data vg\"\n"
	for _, damage := range []string{"", "header", "entries"} {
		t.Run("damage="+damage, func(t *testing.T) {
			path := sfdiskImage(t, script)
			want := sfdiskJSON(t, path) // before the damage
			d := openFile(t, path)
			switch damage {
			case "header":
				d.WriteAt(make([]byte, 512), 512)
			case "entries":
				d.WriteAt([]byte("garbage"), 2*512+10)
			}
			tab, err := Partitions(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			if tab.Backup != (damage != "") {
				t.Errorf("read from the backup: %v; want %v (%v)", tab.Backup, damage != "", tab.Problems)
			}
			if len(tab.Partitions) != len(want.PartitionTable.Partitions) {
				t.Fatalf("%d partitions, want %d", len(tab.Partitions), len(want.PartitionTable.Partitions))
			}
			for i, w := range want.PartitionTable.Partitions {
				g := tab.Partitions[i]
				if g.Start != w.Start*512 || g.Size != w.Size*512 || g.GUID != w.UUID || g.Name != w.Name || g.Type != w.Type {
					t.Errorf("partition %d: %+v; sfdisk said %+v", i, g, w)
				}
			}
			if damage == "" {
				agree(t, path, tab)
			}
			if tab.Partitions[2].Kind != "linux-lvm" || tab.Partitions[0].Kind != "linux" {
				t.Errorf("kinds: %+v", tab.Partitions)
			}
		})
	}
}

// memDisk is a disk.Disk over a byte slice, for crafted tables.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, nil
	}
	return copy(p, m[off:]), nil
}
func (m memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }
func (m memDisk) Size() int64                              { return int64(len(m)) }
func (m memDisk) Flush() error                             { return nil }
func (m memDisk) Close() error                             { return nil }

var _ disk.Disk = memDisk(nil)

func putEntry(b []byte, slot int, status, typ byte, lba, n uint32) {
	p := b[446+slot*16:]
	p[0], p[4] = status, typ
	binary.LittleEndian.PutUint32(p[8:], lba)
	binary.LittleEndian.PutUint32(p[12:], n)
	binary.LittleEndian.PutUint16(b[510:], 0xaa55)
}

// TestHostileTables: crafted tables give errors or bounded answers, never a
// hang or a panic.
func TestHostileTables(t *testing.T) {
	ctx := context.Background()
	t.Run("EBR loop", func(t *testing.T) {
		m := make(memDisk, 1<<20)
		putEntry(m, 0, 0, 0x05, 100, 1000)
		putEntry(m[100*512:], 0, 0, 0x83, 1, 10)
		putEntry(m[100*512:], 1, 0, 0x05, 0, 10) // the next EBR is itself
		if _, err := Partitions(ctx, m); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("a looping EBR chain: %v, want ErrCorrupt", err)
		}
	})
	t.Run("past the end", func(t *testing.T) {
		m := make(memDisk, 1<<20)
		putEntry(m, 0, 0, 0x83, 1, 1<<30)
		tab, err := Partitions(ctx, m)
		if err != nil || len(tab.Problems) == 0 {
			t.Errorf("a partition past the end: %v, problems %v", err, tab.Problems)
		}
	})
	t.Run("GPT huge entry array", func(t *testing.T) {
		m := make(memDisk, 1<<20)
		putEntry(m, 0, 0, 0xee, 1, 2047)
		h := m[512:]
		copy(h, "EFI PART")
		le := binary.LittleEndian
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], 1)
		le.PutUint64(h[40:], 34)
		le.PutUint64(h[48:], 2000)
		le.PutUint64(h[72:], 2)
		le.PutUint32(h[80:], 4000)
		le.PutUint32(h[84:], 4096)
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		if _, err := Partitions(ctx, m); !errors.Is(err, disk.ErrCorrupt) {
			t.Errorf("a 16 MiB entry array: %v, want ErrCorrupt", err)
		}
	})
}

func FuzzPartitions(f *testing.F) {
	// Seeds: small tables sfdisk writes (a GPT, and an MBR with logical
	// partitions), when sfdisk is here; and crafted ones.
	for _, seed := range []struct {
		size   int64
		script string
	}{
		{2 << 20, "label: gpt\nfirst-lba: 34\nstart=40, size=100, type=L, name=root\nstart=200, size=100, type=S\n"},
		{1 << 20, "label: dos\nstart=63, size=100, type=83\nstart=200, size=1500, type=5\nstart=300, size=100, type=83\nstart=500, size=100, type=8e\n"},
	} {
		if _, err := exec.LookPath("sfdisk"); err != nil {
			break
		}
		path := filepath.Join(f.TempDir(), "seed.img")
		os.WriteFile(path, make([]byte, seed.size), 0o600)
		cmd := exec.Command("sfdisk", "-q", path)
		cmd.Stdin = strings.NewReader(seed.script)
		if cmd.Run() == nil {
			b, _ := os.ReadFile(path)
			f.Add(b)
		}
	}
	m := make([]byte, 1<<20)
	putEntry(m, 0, 0, 0x05, 100, 1000)
	putEntry(m[100*512:], 0, 0, 0x83, 1, 10)
	putEntry(m[100*512:], 1, 0, 0x05, 0, 10)
	f.Add(m)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4<<20 {
			return
		}
		tab, err := Partitions(context.Background(), memDisk(b))
		if err == nil {
			for _, p := range tab.Partitions {
				if p.Start < 0 || p.Size < 0 {
					t.Fatalf("negative range: %+v", p)
				}
			}
		}
	})
}
