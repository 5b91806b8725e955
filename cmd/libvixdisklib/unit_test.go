package main

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

func TestParseConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vddk.conf")
	conf := `# VDDK config
tmpDirectory = "/var/tmp/vddk"
vixDiskLib.transport.LogLevel = 5
VixDiskLib.nfc.ReadTimeoutsMs = 90000
vixDiskLib.nfc.WriteTimeoutMs = 120000
vixDiskLib.nfcAio.Session.BufCount = 4
vixDiskLib.linuxSSL.verifyCertificates = 1
vixDiskLib.phoneHome.EnablePhoneHome = 0
`
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, level, unknown, err := parseConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TempDir != "/var/tmp/vddk" || level != 5 || cfg.Timeout != 120*time.Second || cfg.NBDInFlight != 64 {
		t.Errorf("got TempDir %q, level %d, timeout %v, in flight %d; want /var/tmp/vddk, 5, 2m0s, 64", cfg.TempDir, level, cfg.Timeout, cfg.NBDInFlight)
	}
	if len(unknown) != 2 {
		t.Errorf("unknown keys %q, want the two VDDK keys vdisk has no use for", unknown)
	}
	if err := os.WriteFile(p, []byte("vixDiskLib.transport.LogLevel = loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := parseConfig(p); disk.CodeOf(err) != disk.ErrInvalid {
		t.Errorf("a bad log level: got %v, want invalid", err)
	}
}

func TestVDDKModes(t *testing.T) {
	for _, tc := range []struct {
		in     string
		remote bool
		want   string
	}{
		{"", false, "file"},
		{"", true, "nbdssl"},
		{"nbdssl:nbd", true, "nbdssl:nbd"},
		{"san:hotadd:nbdssl", true, "direct:nbdssl"},
		{"file:san:hotadd:nbd", true, "direct:nbd"},
		{"file", true, "nbdssl"},
		{"nbd:bogus", true, "nbd"},
		{"nbdssl", false, "file"},
	} {
		if got, _ := vddkModes(tc.in, tc.remote); got != tc.want {
			t.Errorf("vddkModes(%q, remote %v) = %q, want %q", tc.in, tc.remote, got, tc.want)
		}
	}
}

func TestParseSHA1(t *testing.T) {
	for _, s := range []string{
		"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01",
		"ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01",
		"abcdef0123456789abcdef0123456789abcdef01",
		"ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67 89 ab cd ef 01",
	} {
		if _, ok := parseSHA1(s); !ok {
			t.Errorf("parseSHA1(%q) refused", s)
		}
	}
	for _, s := range []string{"", "AB:CD", "abcdef0123456789abcdef0123456789abcdef0", "zz:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01"} {
		if _, ok := parseSHA1(s); ok {
			t.Errorf("parseSHA1(%q) accepted", s)
		}
	}
}

func TestVixCode(t *testing.T) {
	for _, tc := range []struct {
		code   disk.Code
		remote bool
		want   uint64
	}{
		{disk.ErrNotFound, false, vixFileNotFound},
		{disk.ErrNotFound, true, vixObjectNotFound},
		{disk.ErrPermission, false, vixFileAccessError},
		{disk.ErrPermission, true, vixHostUserPerms},
		{disk.ErrBusy, false, vixFileAlreadyLocked},
		{disk.ErrBusy, true, vixObjectIsBusy},
		{disk.ErrCorrupt, false, vixDiskNeedsRepair},
		{disk.ErrNotSupported, true, vixNotSupported},
	} {
		if got := vixCode(disk.Errorf(tc.code, "x"), tc.remote); got != tc.want {
			t.Errorf("vixCode(%v, remote %v) = %d, want %d", tc.code, tc.remote, got, tc.want)
		}
	}
	for c := range codeTable {
		if _, ok := vixText[codeTable[c][0]]; !ok {
			t.Errorf("no text for %d", codeTable[c][0])
		}
		if _, ok := vixText[codeTable[c][1]]; !ok {
			t.Errorf("no text for %d", codeTable[c][1])
		}
	}
}

// TestExitWaitsForCallbacks logs from many goroutines through a log
// callback that takes its time while Exit runs: once Exit has returned, no
// callback may be running or start (VDDK's threads logged after Exit, into
// programs that had torn their loggers down).
func TestExitWaitsForCallbacks(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	if e := VixDiskLib_InitEx(8, 0, nil, nil, nil, nil, nil); e != vixOK {
		t.Fatalf("InitEx: %d", e)
	}
	installSlowLogger()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				logger.Warn("from a library goroutine", "n", i)
			}
		}()
	}
	for slowLoggerCalls() < 50 {
		time.Sleep(time.Millisecond)
	}
	VixDiskLib_Exit()
	markExitReturned()
	time.Sleep(20 * time.Millisecond) // goroutines keep logging after Exit
	close(stop)
	wg.Wait()
	if n := lateLogCalls(); n != 0 {
		t.Fatalf("%d log callbacks ran after Exit returned", n)
	}
}
