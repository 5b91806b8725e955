package winreg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

func sz(s string) []byte { return append(u16s(s), 0, 0) }

func dword(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func mbrDevice(sig uint32, off uint64) []byte {
	return binary.LittleEndian.AppendUint64(dword(sig), off)
}

func gptDevice(guid [16]byte) []byte { return append([]byte("DMIO:ID:"), guid[:]...) }

var testGUID = [16]byte{0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}

func softwareTree() *wkey {
	cv := &wkey{name: "CurrentVersion", vals: []wval{
		{"ProductName", TypeSZ, sz("Windows 10 Pro")},
		{"DisplayVersion", TypeSZ, sz("22H2")},
		{"ReleaseId", TypeSZ, sz("2009")},
		{"CurrentVersion", TypeSZ, sz("6.3")},
		{"CurrentBuild", TypeSZ, sz("19045")},
		{"CurrentBuildNumber", TypeSZ, sz("19045")},
		{"EditionID", TypeSZ, sz("Professional")},
		{"InstallationType", TypeSZ, sz("Client")},
		{"UBR", TypeDWord, dword(3803)},
		{"CurrentMajorVersionNumber", TypeDWord, dword(10)},
		{"CurrentMinorVersionNumber", TypeDWord, dword(0)},
		{"DigitalProductId", TypeBinary, bytes.Repeat([]byte{0xa5}, 40000)},
	}}
	var many []*wkey
	for i := range 30 {
		many = append(many, &wkey{name: fmt.Sprintf("Sub%02d", i)})
	}
	return &wkey{name: "ROOT", subs: []*wkey{
		{name: "Classes", list: "lf"},
		{name: "Microsoft", list: "ri", subs: []*wkey{
			{name: "Aaa", list: "li"},
			{name: "Windows NT", subs: []*wkey{cv}},
			{name: "Ünïcode ключ", utf16: true},
			{name: "Many", subs: many},
		}},
	}}
}

func systemTree() *wkey {
	return &wkey{name: "ROOT", subs: []*wkey{
		{name: "MountedDevices", vals: []wval{
			{`\DosDevices\C:`, TypeBinary, mbrDevice(0x1234abcd, 1048576)},
			{`\DosDevices\D:`, TypeBinary, gptDevice(testGUID)},
			{`\DosDevices\E:`, TypeBinary, u16s(`_??_USBSTOR#Disk&Ven_X`)},
			{`\??\Volume{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}`, TypeBinary, mbrDevice(0x1234abcd, 1048576)},
		}},
		{name: "Select", vals: []wval{{"Current", TypeDWord, dword(1)}}},
	}}
}

func TestHive(t *testing.T) {
	b := buildHive(softwareTree())
	h, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := h.Root()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{`microsoft\WINDOWS NT\currentversion`, `Microsoft\Aaa`, `Microsoft\Many\Sub29`, `Microsoft\ünïcode КЛЮЧ`, `Classes`} {
		if _, err := root.Lookup(p); err != nil {
			t.Errorf("Lookup(%q): %v", p, err)
		}
	}
	if _, err := root.Lookup(`Microsoft\Nope`); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("Lookup of a missing key = %v, want not found", err)
	}
	ms, _ := root.Subkey("Microsoft")
	subs, err := ms.Subkeys()
	if err != nil || len(subs) != 4 {
		t.Fatalf("Subkeys(Microsoft) = %d, %v; want 4 through an ri list", len(subs), err)
	}
	cv, _ := root.Lookup(`Microsoft\Windows NT\CurrentVersion`)
	v, err := cv.Value("digitalproductid")
	if err != nil {
		t.Fatal(err)
	}
	d, err := v.Data()
	if err != nil || !bytes.Equal(d, bytes.Repeat([]byte{0xa5}, 40000)) {
		t.Errorf("big data value: %d bytes, %v", len(d), err)
	}
	if v, _ := cv.Value("UBR"); v != nil {
		if n, err := v.Uint(); n != 3803 || err != nil {
			t.Errorf("UBR = %d, %v", n, err)
		}
	}
}

func TestOSInfo(t *testing.T) {
	fsys := fstest.MapFS{
		"WINDOWS/system32/CONFIG/software": {Data: buildHive(softwareTree())},
		"WINDOWS/system32/CONFIG/System":   {Data: buildHive(systemTree())},
	}
	o, err := OSInfo(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := OS{ProductName: "Windows 10 Pro", DisplayVersion: "22H2", ReleaseID: "2009", CurrentVersion: "6.3",
		CurrentBuild: "19045", UBR: 3803, EditionID: "Professional", InstallationType: "Client", Major: 10, Minor: 0}
	if o != want {
		t.Errorf("OSInfo = %+v\nwant %+v", o, want)
	}
	m, err := DriveLetters(fsys)
	if err != nil {
		t.Fatal(err)
	}
	wantM := map[string]string{"C:": "mbr:0x1234abcd:1048576", "D:": "gpt:12345678-9ABC-DEF0-0123-456789ABCDEF"}
	if fmt.Sprint(m) != fmt.Sprint(wantM) {
		t.Errorf("DriveLetters = %v, want %v", m, wantM)
	}
	if _, err := OSInfo(fstest.MapFS{}); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("OSInfo of an empty volume = %v, want not found", err)
	}
}

// TestHivexReadsOurHive checks the test writer against hivex, so that the
// reader is not only checked against a writer sharing its mistakes.
func TestHivexReadsOurHive(t *testing.T) {
	testenv.Tool(t, "hivexget")
	p := filepath.Join(t.TempDir(), "SOFTWARE")
	if err := os.WriteFile(p, buildHive(softwareTree()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := testenv.Run(t, "hivexget", p, `\Microsoft\Windows NT\CurrentVersion`, "ProductName")
	if strings.TrimSpace(out) != "Windows 10 Pro" {
		t.Errorf("hivexget ProductName = %q", out)
	}
	out = testenv.Run(t, "hivexget", p, `\Microsoft\Windows NT\CurrentVersion`)
	for _, w := range []string{`"CurrentBuild"="19045"`, `"UBR"=dword:00000edb`} {
		if !strings.Contains(out, w) {
			t.Errorf("hivexget lists no %s:\n%s", w, out)
		}
	}
}

// TestHivexWritten reads hives that hivexsh wrote: keys and values added
// to a minimal hive and committed by the real tool.
func TestHivexWritten(t *testing.T) {
	testenv.Tool(t, "hivexsh")
	dir := t.TempDir()
	write := func(name string, root *wkey, script string) string {
		min := filepath.Join(dir, name+".min")
		if err := os.WriteFile(min, buildHive(root), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, name)
		cmd := exec.Command("hivexsh", "-w", min)
		cmd.Stdin = strings.NewReader(script + "commit " + out + "\n")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("hivexsh: %v\n%s", err, b)
		}
		return out
	}
	soft := write("SOFTWARE", &wkey{name: "ROOT"}, `add Microsoft
cd Microsoft
add Windows NT
cd Windows NT
add CurrentVersion
cd CurrentVersion
setval 6
ProductName
string:Windows Server 2019 Standard
ReleaseId
string:1809
CurrentBuildNumber
string:17763
EditionID
string:ServerStandard
CurrentMajorVersionNumber
dword:0x0000000a
UBR
dword:5329
cd ..
cd ..
`+strings.Repeat("add Filler\ncd Filler\ncd ..\n", 1)+`
`)
	sys := write("SYSTEM", &wkey{name: "ROOT"}, `add MountedDevices
cd MountedDevices
setval 3
\DosDevices\C:
hex:3:cd,ab,34,12,00,00,10,00,00,00,00,00
\DosDevices\E:
hex:3:44,4d,49,4f,3a,49,44,3a,78,56,34,12,bc,9a,f0,de,01,23,45,67,89,ab,cd,ef
\DosDevices\F:
hex:3:5f,00,3f,00
`)
	sb, _ := os.ReadFile(soft)
	yb, _ := os.ReadFile(sys)
	fsys := fstest.MapFS{
		"Windows/System32/config/SOFTWARE": {Data: sb},
		"Windows/System32/config/SYSTEM":   {Data: yb},
	}
	o, err := OSInfo(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := OS{ProductName: "Windows Server 2019 Standard", ReleaseID: "1809", CurrentBuild: "17763", EditionID: "ServerStandard", Major: 10, UBR: 5329}
	if o != want {
		t.Errorf("OSInfo = %+v\nwant %+v", o, want)
	}
	m, err := DriveLetters(fsys)
	if err != nil {
		t.Fatal(err)
	}
	wantM := map[string]string{"C:": "mbr:0x1234abcd:1048576", "E:": "gpt:12345678-9ABC-DEF0-0123-456789ABCDEF"}
	if fmt.Sprint(m) != fmt.Sprint(wantM) {
		t.Errorf("DriveLetters = %v, want %v", m, wantM)
	}
}

// TestHivexBigData reads a value too big for one cell, written by hivex
// through its Python binding (hivexsh cannot enter one).
func TestHivexBigData(t *testing.T) {
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import hivex").Run() != nil {
		if testenv.Required("python3-hivex") {
			t.Fatal("python3-hivex is required")
		}
		t.Skip("python3-hivex not installed")
	}
	dir := t.TempDir()
	min, out := filepath.Join(dir, "min"), filepath.Join(dir, "big")
	if err := os.WriteFile(min, buildHive(&wkey{name: "ROOT"}), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `import sys, hivex
h = hivex.Hivex(sys.argv[1], write=True)
k = h.node_add_child(h.root(), "Key")
h.node_set_value(k, {"key": "Big", "t": 3, "value": bytes(range(256)) * 200})
h.node_set_value(k, {"key": "Small", "t": 4, "value": b"\x07\x00\x00\x00"})
h.commit(sys.argv[2])
`
	if b, err := exec.Command(py, "-c", script, min, out).CombinedOutput(); err != nil {
		t.Fatalf("python3 hivex: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	root, _ := h.Root()
	k, err := root.Subkey("KEY")
	if err != nil {
		t.Fatal(err)
	}
	v, err := k.Value("big")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat(func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(), 200)
	if d, err := v.Data(); err != nil || !bytes.Equal(d, want) {
		t.Errorf("big value: %d bytes, %v; want %d", len(d), err, len(want))
	}
	v, _ = k.Value("Small")
	if n, err := v.Uint(); n != 7 || err != nil {
		t.Errorf("Small = %d, %v; want 7", n, err)
	}
}
