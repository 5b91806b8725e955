package format

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// TestForeignFormatsRefused: images of formats vdisk does not read, made by
// qemu-img, are refused by probing with an error naming the format; -f raw
// still opens their containers.
func TestForeignFormatsRefused(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	ctx := context.Background()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
	}{
		{"qcow2", []string{"-f", "qcow2"}},
		{"qed", []string{"-f", "qed"}},
		{"vdi", []string{"-f", "vdi"}},
		{"vpc", []string{"-f", "vpc"}},
		{"vpc", []string{"-f", "vpc", "-o", "subformat=fixed"}},
		{"vhdx", []string{"-f", "vhdx"}},
		{"luks", []string{"--object", "secret,id=s0,data=pw", "-f", "luks", "-o", "key-secret=s0,iter-time=10"}},
	} {
		path := filepath.Join(dir, strings.Join(c.args[len(c.args)-1:], "")+"-"+c.name+".img")
		args := append(append([]string{"create", "-q"}, c.args...), path, "4M")
		testenv.Run(t, "qemu-img", args...)
		_, _, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
		if !errors.Is(err, disk.ErrNotSupported) || !strings.Contains(err.Error(), "a "+c.name+" image") {
			t.Errorf("%s %v: open = %v, want ErrNotSupported naming %s", c.name, c.args, err, c.name)
		}
		d, f, err := Open(ctx, path, &OpenOptions{ReadOnly: true, Format: Raw})
		if err != nil || f != Raw {
			t.Errorf("%s with -f raw: %v", c.name, err)
		} else {
			d.Close()
		}
	}
}
