package conffile

import (
	"errors"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

func TestParse(t *testing.T) {
	got, err := Parse([]byte("# a comment\n\ndata-dir = /srv/vdisk   # trailing\nlisten=\"a, b\"\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	want := []Pair{{"data-dir", "/srv/vdisk", 3}, {"listen", "a, b", 4}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"novalue\n", " = x\n"} {
		if _, err := Parse([]byte(bad), "t"); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := Parse(make([]byte, MaxSize+1), "t"); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("an oversized file: %v", err)
	}
}

// FuzzParse: never panics, and every pair it returns has a key.
func FuzzParse(f *testing.F) {
	f.Add([]byte("# c\ndata-dir = /srv/vdisk\nlisten = 0.0.0.0:8443, [::]:8443\nlog-format=\"json\"\n"))
	f.Add([]byte("=\nkey\n \t\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kv, err := Parse(b, "fuzz")
		if err != nil {
			return
		}
		for _, p := range kv {
			if p.Key == "" {
				t.Fatalf("empty key from %q", b)
			}
		}
	})
}
