package backup

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

const (
	maxManifest = 16 << 20
	maxMapObj   = 1 << 30
)

// Point is one backup of a set of disks: a manifest naming one chunk map
// per disk. Points are immutable; the fields are what the manifest says.
type Point struct {
	ID       string    `json:"id"` // 32 hex digits
	Time     time.Time `json:"time"`
	Source   string    `json:"source"`
	Tags     []string  `json:"tags,omitempty"`
	Hostname string    `json:"hostname,omitempty"`
	Parent   string    `json:"parent,omitempty"` // ID of the point the backup was incremental to
	// Config is the caller's opaque blob, such as a VM configuration.
	Config []byte      `json:"config,omitempty"`
	Disks  []PointDisk `json:"disks"`
}

// PointDisk describes one disk of a point.
type PointDisk struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`       // bytes
	ChunkSize int64  `json:"chunk_size"` // bytes
	Map       string `json:"map"`        // the chunk map object
	// ChangeID is the caller's opaque change ID of the disk at the point
	// (what the next incremental asks changed areas from).
	ChangeID string `json:"change_id,omitempty"`
	// BytesRead is what the backup read from the source, BytesNew the
	// plaintext bytes of chunks the repository did not hold yet, and
	// BytesStored those chunks' bytes after compression and encryption.
	BytesRead   int64 `json:"bytes_read"`
	BytesNew    int64 `json:"bytes_new"`
	BytesStored int64 `json:"bytes_stored"`
	// DataChunks counts the map's data chunks (neither hole nor zero).
	DataChunks int64 `json:"data_chunks"`
}

// Disk returns the point's disk named name, or nil.
func (p *Point) Disk(name string) *PointDisk {
	for i := range p.Disks {
		if p.Disks[i].Name == name {
			return &p.Disks[i]
		}
	}
	return nil
}

type manifest struct {
	Version int `json:"version"`
	Point
}

func decodeManifest(name string, b []byte) (*Point, error) {
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, corrupt(name, "manifest: %v", err)
	}
	if m.Version != formatVersion {
		return nil, corrupt(name, "manifest version %d", m.Version)
	}
	p := &m.Point
	if len(p.ID) != 32 || !isHex(p.ID) || (name != "" && name != pointsPrefix+p.ID) {
		return nil, corrupt(name, "manifest names point %q", p.ID)
	}
	seen := map[string]bool{}
	for i, d := range p.Disks {
		if d.Name == "" || seen[d.Name] {
			return nil, corrupt(name, "disk %d: empty or repeated name %q", i, d.Name)
		}
		seen[d.Name] = true
		if d.Size < 0 || d.ChunkSize < MinChunkSize || d.ChunkSize > MaxChunkSize || d.ChunkSize&(d.ChunkSize-1) != 0 ||
			chunksOf(d.Size, d.ChunkSize) > maxChunks || d.Map != fmt.Sprintf("%s%s.%d", mapsPrefix, p.ID, i) {
			return nil, corrupt(name, "disk %q: bad size %d, chunk size %d or map %q", d.Name, d.Size, d.ChunkSize, d.Map)
		}
	}
	return p, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// readPoint loads the manifest points/<id>.
func (r *Repository) readPoint(ctx context.Context, id string) (*Point, error) {
	name := pointsPrefix + id
	b, err := r.st.Get(ctx, name, maxManifest)
	if err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", name, err)
	}
	pl, err := r.c.openMeta(name, "point", b)
	if err != nil {
		return nil, err
	}
	return decodeManifest(name, pl)
}

// pointIDs lists the IDs of every point.
func (r *Repository) pointIDs(ctx context.Context) ([]string, error) {
	var ids []string
	err := r.st.List(ctx, pointsPrefix, func(in storage.Info) error {
		ids = append(ids, strings.TrimPrefix(in.Name, pointsPrefix))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: list points: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// Points returns every point of the repository, oldest first. When some
// manifests cannot be read (damaged: disk.ErrCorrupt) it returns the
// readable points together with an error naming the others, so that a
// listing still shows what is there; any other failure returns no points.
func (r *Repository) Points(ctx context.Context) ([]*Point, error) {
	ids, err := r.pointIDs(ctx)
	if err != nil {
		return nil, err
	}
	var ps []*Point
	var damaged []error
	for _, id := range ids {
		p, err := r.readPoint(ctx, id)
		if errors.Is(err, disk.ErrNotFound) {
			continue // forgotten since the listing
		}
		if disk.CodeOf(err) == disk.ErrCorrupt {
			damaged = append(damaged, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	slices.SortStableFunc(ps, func(a, b *Point) int { return a.Time.Compare(b.Time) })
	return ps, errors.Join(damaged...)
}

// Point loads the point whose ID is id or starts with id (a unique prefix
// of at least 4 hex digits). An unknown ID gives disk.ErrNotFound and an
// ambiguous prefix disk.ErrInvalid.
func (r *Repository) Point(ctx context.Context, id string) (*Point, error) {
	id = strings.ToLower(id)
	if len(id) < 4 || len(id) > 32 || !isHex(id+strings.Repeat("0", len(id)%2)) {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: point ID %q is not 4 to 32 hex digits", id)
	}
	ids, err := r.pointIDs(ctx)
	if err != nil {
		return nil, err
	}
	var match []string
	for _, x := range ids {
		if strings.HasPrefix(x, id) {
			match = append(match, x)
		}
	}
	switch len(match) {
	case 0:
		return nil, &disk.Error{Op: "backup: point", Path: id, Off: -1, Code: disk.ErrNotFound}
	case 1:
		return r.readPoint(ctx, match[0])
	}
	return nil, disk.Errorf(disk.ErrInvalid, "backup: point ID prefix %q matches %d points", id, len(match))
}

// loadMap reads a point disk's chunk map.
func (r *Repository) loadMap(ctx context.Context, d *PointDisk) (*chunkMap, error) {
	b, err := r.st.Get(ctx, d.Map, maxMapObj)
	if err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", d.Map, err)
	}
	pl, err := r.c.openMeta(d.Map, "map", b)
	if err != nil {
		return nil, err
	}
	m, rest, err := decodeMap(d.Map, pl, false)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, corrupt(d.Map, "%d bytes after the chunk map", len(rest))
	}
	if m.size != d.Size || m.chunkSize != d.ChunkSize {
		return nil, corrupt(d.Map, "chunk map of %d bytes in %d-byte chunks, manifest says %d in %d", m.size, m.chunkSize, d.Size, d.ChunkSize)
	}
	return m, nil
}
