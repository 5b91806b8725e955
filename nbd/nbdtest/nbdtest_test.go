package nbdtest_test

import (
	"bytes"
	"testing"

	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/nbd/nbdtest"
)

func TestServer(t *testing.T) {
	for _, o := range []nbdtest.Options{{}, {TCP: true}, {TLS: true}, {TCP: true, TLS: true}, {ReadOnly: true}} {
		d := disktest.NewMemDisk(1 << 20)
		s := nbdtest.NewServer(t, d, &o)
		c := s.Dial(t)
		_, err := c.WriteAt([]byte("hello"), 4096)
		if o.ReadOnly {
			if err == nil {
				t.Errorf("%+v: a write to a read-only export succeeded", o)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		got := make([]byte, 5)
		d.ReadAt(got, 4096)
		if !bytes.Equal(got, []byte("hello")) {
			t.Errorf("%+v: the disk holds %q", o, got)
		}
	}
}
