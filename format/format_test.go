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
