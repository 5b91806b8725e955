package winreg

import (
	"bytes"
	"testing"
	"testing/fstest"
)

// FuzzHive opens arbitrary hives and walks every key and value, and runs
// OSInfo and DriveLetters over them: no panic, no unbounded work.
func FuzzHive(f *testing.F) {
	f.Add(buildHive(systemTree()))
	soft := softwareTree()
	cv := soft.subs[1].subs[1].subs[0]
	cv.vals[len(cv.vals)-1].data = bytes.Repeat([]byte{1}, 17000)
	f.Add(buildHive(soft))
	f.Add(buildHive(&wkey{name: "ROOT"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		walkHive(h)
		fsys := fstest.MapFS{
			"Windows/System32/config/SOFTWARE": {Data: b},
			"Windows/System32/config/SYSTEM":   {Data: b},
		}
		OSInfo(fsys)
		DriveLetters(fsys)
	})
}

func walkHive(h *Hive) {
	root, err := h.Root()
	if err != nil {
		return
	}
	seen := 0
	var walk func(k *Key, depth int)
	walk = func(k *Key, depth int) {
		if depth > 16 || seen > 2000 {
			return
		}
		seen++
		vs, _ := k.Values()
		for _, v := range vs {
			v.Data()
			v.String()
			v.Uint()
		}
		subs, _ := k.Subkeys()
		for _, s := range subs {
			walk(s, depth+1)
		}
	}
	walk(root, 0)
}
