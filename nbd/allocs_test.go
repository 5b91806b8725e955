package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"
)

// TestReadPathAllocsTotal pins "no allocation per request" on the server's
// read path more tightly than testing.AllocsPerRun can: AllocsPerRun
// divides the malloc count by the runs in integers, so up to one
// allocation per request reads as zero. This counts every malloc in the
// process over many READs (structured replies) and wants well under one
// per hundred requests.
func TestReadPathAllocsTotal(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops items)")
	}
	sock := serve(t, &flatDisk{b: make([]byte, 4<<20)}, ServerOptions{})
	c := rawClient(t, sock)
	defer c.Close()
	c.SetDeadline(time.Time{})
	c.Write(option(optStructuredReply, nil))
	if _, typ, _, err := readReply(c); err != nil || typ != repAck {
		t.Fatal("no structured replies")
	}
	c.Write(option(optExportName, nil))
	var info [10]byte
	if _, err := io.ReadFull(c, info[:]); err != nil {
		t.Fatal(err)
	}
	const n = 64 << 10
	req := make([]byte, 28)
	binary.BigEndian.PutUint32(req, magicRequest)
	binary.BigEndian.PutUint16(req[6:], cmdRead)
	binary.BigEndian.PutUint32(req[24:], n)
	reply := make([]byte, 20+8+n)
	roundTrip := func(i int) error {
		binary.BigEndian.PutUint64(req[8:], uint64(i))              // cookie
		binary.BigEndian.PutUint64(req[16:], uint64(i%64)*(64<<10)) // offset
		if _, err := c.Write(req); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(reply) != magicStructured || binary.BigEndian.Uint64(reply[8:]) != uint64(i) {
			return fmt.Errorf("request %d: reply header %x is not a structured reply to it", i, reply[:20])
		}
		return nil
	}
	for i := range 100 {
		if err := roundTrip(i); err != nil { // warm the pools and start the workers
			t.Fatal(err)
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const requests = 10000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range requests {
		if err := roundTrip(i); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	mallocs := after.Mallocs - before.Mallocs
	if per := float64(mallocs) / requests; per >= 0.01 {
		t.Errorf("%d mallocs over %d READ requests (%.3f per request), want < 0.01 per request", mallocs, requests, per)
	}
}
