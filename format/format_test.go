package format

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/format/vmdk"
)

func TestDetect(t *testing.T) {
	tests := []struct {
		head string
		want Format
	}{
		{"KDMV\x01\x00\x00\x00", VMDK},
		{"COWD\x01\x00\x00\x00", VMDK},
		{"# Disk DescriptorFile\nversion=1\nCID=1\n", VMDK},
		{"# Disk DescriptorFile\r\nversion=1\r\n", VMDK},
		{"#c\n   \nversion=3\n", VMDK},
		{"\nversion=1\n", Raw}, // qemu: an empty first line means raw
		{"version=4\n", Raw},
		{"hello world", Raw},
		{"version=2", Raw},            // no line end: qemu wants "version=X\n"
		{"version=1 \n", Raw},         // trailing text
		{" version=1\n", Raw},         // a line starting with spaces must be blank
		{"\t\nversion=1\n", Raw},      // tabs are not blanks to qemu
		{"  \r\nversion=2\r\n", VMDK}, // blank line with CRLF
		{"# only a comment", Raw},     // never reaches a version line
		{"KDM", Raw},                  // short magic
		{"#\x00\nversion=1\n", VMDK},  // NULs in comments do not matter
		{"", Raw},
	}
	for _, tt := range tests {
		if got := Detect([]byte(tt.head)); got != tt.want {
			t.Errorf("Detect(%q) = %s, want %s", tt.head, got, tt.want)
		}
	}
}

func TestOpenCreate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, f := range Formats {
		path := filepath.Join(dir, "x."+string(f))
		d, err := Create(ctx, path, f, 1<<20, &CreateOptions{VMDK: vmdk.CreateOptions{Subformat: vmdk.MonolithicFlat}})
		if err != nil {
			t.Fatalf("Create %s: %v", f, err)
		}
		if _, err := d.WriteAt([]byte("vdisk"), 4096); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d, got, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
		if err != nil || got != f {
			t.Fatalf("Open %s = %s, %v", path, got, err)
		}
		b := make([]byte, 5)
		if _, err := d.ReadAt(b, 4096); err != nil || string(b) != "vdisk" {
			t.Errorf("read back %q, %v", b, err)
		}
		d.Close()
	}
}

// FuzzDetect checks that detection never panics and is decided by the
// first line that is neither a comment nor blank.
func FuzzDetect(f *testing.F) {
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\n"))
	f.Add([]byte("KDMV\x01\x00\x00\x00"))
	f.Add([]byte("COWD"))
	f.Add([]byte(" \r\nversion=3\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Detect(b)
		if got != VMDK && got != Raw {
			t.Fatalf("Detect = %q", got)
		}
		// Appending bytes after a decided descriptor never changes it.
		if isDescriptor(b) && !isDescriptor(append(b[:len(b):len(b)], "junk"...)) {
			t.Fatalf("descriptor verdict changed by a suffix: %q", b)
		}
	})
}
