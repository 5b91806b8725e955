package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vdisk-project/vdisk/disk"
)

// Variant is the width of a FAT's entries.
type Variant int

// The three FAT variants, named by their entry width in bits.
const (
	FAT12 Variant = 12
	FAT16 Variant = 16
	FAT32 Variant = 32
)

// Limits that keep the work and memory a crafted volume can cost bounded.
const (
	// maxDirBytes bounds a directory's size: the FAT specification and
	// Linux's vfat allow 65,536 entries (2 MiB).
	maxDirBytes = 2 << 20
	// fatChunk is the unit in which the FAT is read and cached.
	fatChunk = 64 << 10
	// maxFATChunks bounds the FAT cache (16 MiB).
	maxFATChunks = 256
	// maxDirCache bounds the directory cache, counted in entries.
	maxDirCache = 1 << 20
)

// FS is a FAT12, FAT16 or FAT32 filesystem, read-only. It implements
// [inode.FS] and is safe for concurrent use.
type FS struct {
	r    io.ReaderAt
	size int64

	variant     Variant
	sectorSize  int64
	clusterSize int64
	fatOff      int64 // byte offset of the first FAT
	fatBytes    int64 // size of one FAT
	rootOff     int64 // FAT12/16: byte offset of the fixed root directory
	rootBytes   int64 // FAT12/16: its size
	rootCluster uint32
	dataOff     int64  // byte offset of cluster 2
	clusters    uint32 // number of data clusters (cluster numbers 2..clusters+1)
	serial      uint32
	label       string
	fsinfoFree  int64 // free clusters from FSInfo, -1 when unknown

	// small holds the chunks of a FAT of at most maxFATChunks chunks,
	// read once each and never evicted, for lock-free lookups; larger
	// FATs go through the bounded fatCache.
	small    []atomic.Pointer[[]byte]
	fatMu    sync.Mutex
	fatCache map[int64][]byte

	dirMu      sync.Mutex
	dirCache   map[uint32][]entry
	dirEntries int

	freeOnce sync.Once
	free     int64
	freeErr  error
}

func corrupt(format string, args ...any) error {
	return disk.Errorf(disk.ErrCorrupt, "fat: "+format, args...)
}

// Open reads the FAT filesystem in the size bytes of r. It checks the
// boot sector's BIOS parameter block and returns an error matching
// disk.ErrCorrupt when it does not describe a FAT filesystem that fits in
// size (disk.ErrAccess when r fails).
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < 512 {
		return nil, corrupt("volume of %d bytes is too small", size)
	}
	b := make([]byte, 512)
	if err := readFull(r, b, 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	f := &FS{r: r, size: size, fsinfoFree: -1, fatCache: map[int64][]byte{}, dirCache: map[uint32][]entry{}}
	bps := int64(le.Uint16(b[11:]))
	spc := int64(b[13])
	rsvd := int64(le.Uint16(b[14:]))
	nfats := int64(b[16])
	rootEnts := int64(le.Uint16(b[17:]))
	total := int64(le.Uint16(b[19:]))
	if total == 0 {
		total = int64(le.Uint32(b[32:]))
	}
	fatSz := int64(le.Uint16(b[22:]))
	fat32 := fatSz == 0
	if fat32 {
		fatSz = int64(le.Uint32(b[36:]))
	}
	switch {
	case b[0] != 0xeb && b[0] != 0xe9:
		return nil, corrupt("boot sector has no jump instruction (%#x)", b[0])
	case bps != 512 && bps != 1024 && bps != 2048 && bps != 4096:
		return nil, corrupt("bad sector size %d", bps)
	case spc == 0 || spc&(spc-1) != 0:
		return nil, corrupt("bad sectors per cluster %d", spc)
	case spc*bps > 1<<20:
		return nil, corrupt("cluster size %d too large", spc*bps)
	case rsvd == 0:
		return nil, corrupt("no reserved sectors")
	case nfats == 0:
		return nil, corrupt("no FAT")
	case fatSz == 0:
		return nil, corrupt("FAT size is 0")
	case fat32 && rootEnts != 0:
		return nil, corrupt("FAT32 with %d fixed root entries", rootEnts)
	case !fat32 && rootEnts == 0:
		return nil, corrupt("no root directory entries")
	}
	f.sectorSize = bps
	f.clusterSize = spc * bps
	f.fatOff = rsvd * bps
	f.fatBytes = fatSz * bps
	f.rootOff = f.fatOff + nfats*f.fatBytes
	f.rootBytes = (rootEnts*32 + bps - 1) / bps * bps
	f.dataOff = f.rootOff + f.rootBytes
	if total*bps > size {
		// A truncated volume (or a wrong count): read what is there.
		total = size / bps
	}
	if f.dataOff >= total*bps {
		return nil, corrupt("no data area: it would start at byte %d of %d", f.dataOff, total*bps)
	}
	clusters := (total*bps - f.dataOff) / f.clusterSize
	switch {
	case fat32:
		f.variant = FAT32
		clusters = min(clusters, 0x0ffffff5)
	case clusters < 4085:
		f.variant = FAT12
	default:
		f.variant = FAT16
		clusters = min(clusters, 0xfff5)
	}
	if clusters == 0 {
		return nil, corrupt("no data clusters")
	}
	// The FAT must hold an entry for each cluster.
	if need := (int64(f.variant)*(clusters+2) + 7) / 8; need > f.fatBytes {
		clusters = f.fatBytes*8/int64(f.variant) - 2
		if clusters <= 0 {
			return nil, corrupt("FAT of %d bytes too small", f.fatBytes)
		}
	}
	f.clusters = uint32(clusters)
	if chunks := (f.fatBytes + fatChunk - 1) / fatChunk; chunks <= maxFATChunks {
		f.small = make([]atomic.Pointer[[]byte], chunks)
	}
	serialOff, labelOff := 39, 43
	if fat32 {
		serialOff, labelOff = 67, 71
		f.rootCluster = le.Uint32(b[44:])
		if !f.valid(f.rootCluster) {
			return nil, corrupt("root directory cluster %d out of range", f.rootCluster)
		}
		f.readFSInfo(int64(le.Uint16(b[48:])))
	}
	f.serial = le.Uint32(b[serialOff:])
	if l := strings.TrimRight(string(b[labelOff:labelOff+11]), " "); l != "NO NAME" {
		f.label = decodeOEM(strings.TrimRight(string(b[labelOff:labelOff+11]), " \x00"))
	}
	// blkid prefers the label entry of the root directory.
	if _, err := f.readDir(f.rootCluster); err != nil {
		return nil, fmt.Errorf("fat: root directory: %w", err)
	}
	if l, ok := f.rootLabel(); ok {
		f.label = l
	}
	return f, nil
}

// readFSInfo reads FAT32's free cluster count when its signatures hold.
func (f *FS) readFSInfo(sector int64) {
	if sector == 0 || sector == 0xffff || (sector+1)*f.sectorSize > f.fatOff {
		return
	}
	b := make([]byte, 512)
	if readFull(f.r, b, sector*f.sectorSize) != nil {
		return
	}
	le := binary.LittleEndian
	if le.Uint32(b) != 0x41615252 || le.Uint32(b[484:]) != 0x61417272 {
		return
	}
	if n := le.Uint32(b[488:]); n <= f.clusters {
		f.fsinfoFree = int64(n)
	}
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return disk.Wrap(err, "fat: read", "", off)
}

// valid reports whether c is a data cluster's number.
func (f *FS) valid(c uint32) bool { return c >= 2 && c-2 < f.clusters }

// clusterOff is the byte offset of data cluster c (which must be valid).
func (f *FS) clusterOff(c uint32) int64 { return f.dataOff + int64(c-2)*f.clusterSize }

// fatEntry returns the n (2 or 4) little-endian bytes of the first FAT
// at byte i, through the bounded cache.
func (f *FS) fatEntry(i int64, n int) (uint32, error) {
	var b [4]byte
	for k := 0; k < n; {
		chunk, err := f.fatChunk((i + int64(k)) / fatChunk)
		if err != nil {
			return 0, err
		}
		o := (i + int64(k)) % fatChunk
		if o >= int64(len(chunk)) {
			return 0, corrupt("FAT entry past the FAT")
		}
		k += copy(b[k:n], chunk[o:])
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func (f *FS) fatChunk(ci int64) ([]byte, error) {
	if f.small != nil && ci < int64(len(f.small)) {
		if c := f.small[ci].Load(); c != nil {
			return *c, nil
		}
		n := min(fatChunk, f.fatBytes-ci*fatChunk)
		c := make([]byte, n)
		if err := readFull(f.r, c, f.fatOff+ci*fatChunk); err != nil {
			return nil, err
		}
		f.small[ci].Store(&c)
		return c, nil
	}
	f.fatMu.Lock()
	c, ok := f.fatCache[ci]
	f.fatMu.Unlock()
	if ok {
		return c, nil
	}
	n := min(fatChunk, f.fatBytes-ci*fatChunk)
	if n <= 0 {
		return nil, corrupt("FAT entry past the FAT")
	}
	c = make([]byte, n)
	if err := readFull(f.r, c, f.fatOff+ci*fatChunk); err != nil {
		return nil, err
	}
	f.fatMu.Lock()
	if len(f.fatCache) >= maxFATChunks {
		for k := range f.fatCache { // drop any one
			delete(f.fatCache, k)
			break
		}
	}
	f.fatCache[ci] = c
	f.fatMu.Unlock()
	return c, nil
}

// Entry kinds returned by next.
const (
	linkNext = iota
	linkEnd
	linkFree
	linkBad
)

// next returns the FAT entry of cluster c and what it means.
func (f *FS) next(c uint32) (uint32, int, error) {
	var v, eoc, bad uint32
	switch f.variant {
	case FAT12:
		var err error
		if v, err = f.fatEntry(int64(c)*3/2, 2); err != nil {
			return 0, 0, err
		}
		if c&1 != 0 {
			v >>= 4
		}
		v &= 0xfff
		eoc, bad = 0xff8, 0xff7
	case FAT16:
		var err error
		if v, err = f.fatEntry(int64(c)*2, 2); err != nil {
			return 0, 0, err
		}
		eoc, bad = 0xfff8, 0xfff7
	default:
		var err error
		if v, err = f.fatEntry(int64(c)*4, 4); err != nil {
			return 0, 0, err
		}
		v &= 0x0fffffff
		eoc, bad = 0x0ffffff8, 0x0ffffff7
	}
	switch {
	case v == 0:
		return v, linkFree, nil
	case v == bad:
		return v, linkBad, nil
	case v >= eoc:
		return v, linkEnd, nil
	}
	return v, linkNext, nil
}

// run is a range of consecutive clusters.
type run struct {
	first uint32
	n     uint32
}

// chain follows the cluster chain from start and returns it as runs,
// holding at most limit clusters. Loops are caught with Brent's cycle
// detection, which finds a cycle that starts and closes within the first
// limit clusters before 5*limit+8 steps; so the walk goes on (storing
// nothing) up to that many steps, or to the end of the chain. A chain
// longer than the number of clusters loops.
func (f *FS) chain(start uint32, limit int64) ([]run, int64, error) {
	if !f.valid(start) {
		return nil, 0, corrupt("cluster %d out of range", start)
	}
	var runs []run
	var n int64
	saved, power, lam := start, int64(1), int64(0)
	c := start
	for {
		if n < limit {
			if len(runs) > 0 && runs[len(runs)-1].first+runs[len(runs)-1].n == c {
				runs[len(runs)-1].n++
			} else {
				runs = append(runs, run{c, 1})
			}
		}
		n++
		if n > 5*limit+8 {
			return runs, n, nil // longer than needed, and no loop in what is
		}
		if n > int64(f.clusters) {
			return nil, 0, corrupt("cluster chain from %d loops", start)
		}
		v, kind, err := f.next(c)
		if err != nil {
			return nil, 0, err
		}
		switch kind {
		case linkEnd:
			return runs, n, nil
		case linkFree:
			return nil, 0, corrupt("cluster chain from %d reaches free cluster %d", start, c)
		case linkBad:
			return nil, 0, corrupt("cluster chain from %d reaches bad cluster %d", start, c)
		}
		if !f.valid(v) {
			return nil, 0, corrupt("cluster %d links to %d, out of range", c, v)
		}
		c = v
		if c == saved {
			return nil, 0, corrupt("cluster chain from %d loops at %d", start, c)
		}
		lam++
		if lam == power {
			saved, power, lam = c, power*2, 0
		}
	}
}

// countFree counts the free clusters in the FAT.
func (f *FS) countFree() (int64, error) {
	f.freeOnce.Do(func() {
		if f.fsinfoFree >= 0 {
			f.free = f.fsinfoFree
			return
		}
		var n int64
		for c := uint32(2); f.valid(c); c++ {
			_, kind, err := f.next(c)
			if err != nil {
				f.freeErr = err
				return
			}
			if kind == linkFree {
				n++
			}
		}
		f.free = n
	})
	return f.free, f.freeErr
}
