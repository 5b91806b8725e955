package hostclient

import (
	"context"
	"fmt"
	"net/url"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/hostapi"
)

// The wire types of the API; package server serves these same types.

// About is [hostapi.About].
type About = hostapi.About

// TicketRequest is [hostapi.TicketRequest].
type TicketRequest = hostapi.TicketRequest

// Ticket is [hostapi.Ticket].
type Ticket = hostapi.Ticket

// DiskRequest is [hostapi.DiskRequest].
type DiskRequest = hostapi.DiskRequest

// Login logs in and keeps the session token.
func (c *Client) Login(ctx context.Context, user, password string) (hostapi.Session, error) {
	var out struct {
		Token   string
		Session hostapi.Session
	}
	if err := c.Do(ctx, "POST", "/api/v1/login", map[string]string{"user": user, "password": password}, &out); err != nil {
		return hostapi.Session{}, err
	}
	c.setToken(out.Token)
	return out.Session, nil
}

// Logout ends the session.
func (c *Client) Logout(ctx context.Context) error {
	return c.Do(ctx, "POST", "/api/v1/logout", nil, nil)
}

// Session describes the current session.
func (c *Client) Session(ctx context.Context) (hostapi.Session, error) {
	var s hostapi.Session
	return s, c.Do(ctx, "GET", "/api/v1/session", nil, &s)
}

// About describes the host.
func (c *Client) About(ctx context.Context) (About, error) {
	var a About
	return a, c.Do(ctx, "GET", "/api/v1/about", nil, &a)
}

// VMs lists the VMs.
func (c *Client) VMs(ctx context.Context) ([]hostapi.VMInfo, error) {
	var v []hostapi.VMInfo
	return v, c.Do(ctx, "GET", "/api/v1/vms", nil, &v)
}

// VM describes a VM.
func (c *Client) VM(ctx context.Context, name string) (hostapi.VMInfo, error) {
	var v hostapi.VMInfo
	return v, c.Do(ctx, "GET", "/api/v1/vms/"+Esc(name), nil, &v)
}

// Disks lists the disks.
func (c *Client) Disks(ctx context.Context) ([]hostapi.DiskInfo, error) {
	var v []hostapi.DiskInfo
	return v, c.Do(ctx, "GET", "/api/v1/disks", nil, &v)
}

// Disk describes a disk.
func (c *Client) Disk(ctx context.Context, name string) (hostapi.DiskInfo, error) {
	var v hostapi.DiskInfo
	return v, c.Do(ctx, "GET", "/api/v1/disks/"+Esc(name), nil, &v)
}

// ResolveDisk returns the disk name for a disk, or for a VM and key.
func (c *Client) ResolveDisk(ctx context.Context, diskName, vm, key string) (string, error) {
	if diskName != "" {
		return diskName, nil
	}
	if vm == "" || key == "" {
		return "", disk.Errorf(disk.ErrInvalid, "hostclient: name a disk, or a VM and a controller key")
	}
	v, err := c.VM(ctx, vm)
	if err != nil {
		return "", err
	}
	for _, d := range v.Disks {
		if d.Key == key {
			return d.Name, nil
		}
	}
	return "", disk.Errorf(disk.ErrNotFound, "hostclient: VM %s has no disk at %s", vm, key)
}

// IssueTicket asks for an NBD access ticket.
func (c *Client) IssueTicket(ctx context.Context, r TicketRequest) (Ticket, error) {
	var t Ticket
	return t, c.Do(ctx, "POST", "/api/v1/tickets", r, &t)
}

// RevokeTicket ends a ticket of this session (and its NBD connections).
func (c *Client) RevokeTicket(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/api/v1/tickets/"+Esc(id), nil, nil)
}

// Direct asks for a direct lease on a disk (a snapshot to read, or the
// idle live disk to restore into).
func (c *Client) Direct(ctx context.Context, diskName, snapshot string, write bool) (hostapi.DirectLease, error) {
	mode := "ro"
	if write {
		mode = "rw"
	}
	var l hostapi.DirectLease
	return l, c.Do(ctx, "POST", "/api/v1/disks/"+Esc(diskName)+"/direct", map[string]string{"snapshot": snapshot, "mode": mode}, &l)
}

// EndDirect ends a direct lease.
func (c *Client) EndDirect(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/api/v1/direct/"+Esc(id), nil, nil)
}

// Changes answers QueryChangedDiskAreas, following the host's paging: fn
// gets every area in order. The returned ChangeInfo describes the whole
// answer (its Areas are left empty).
func (c *Client) Changes(ctx context.Context, diskName, snapshot, changeID string, start int64, fn func(hostapi.Area) error) (hostapi.ChangeInfo, error) {
	var all hostapi.ChangeInfo
	for first := true; ; first = false {
		q := url.Values{"changeId": {changeID}, "start": {fmt.Sprint(start)}}
		if snapshot != "" {
			q.Set("snapshot", snapshot)
		}
		var ci hostapi.ChangeInfo
		if err := c.Do(ctx, "GET", "/api/v1/disks/"+Esc(diskName)+"/changes?"+q.Encode(), nil, &ci); err != nil {
			return all, err
		}
		if first {
			all = ci
			all.Areas = nil
		}
		for _, a := range ci.Areas {
			if err := fn(a); err != nil {
				return all, err
			}
		}
		end := ci.StartOffset + ci.Length
		if end >= ci.Capacity || ci.Length <= 0 {
			all.Length = end - all.StartOffset
			return all, nil
		}
		start = end
	}
}

// Metadata returns a disk's (or a snapshot's) disk database.
func (c *Client) Metadata(ctx context.Context, diskName, snapshot string) (map[string]string, error) {
	var m map[string]string
	p := "/api/v1/disks/" + Esc(diskName) + "/metadata"
	if snapshot != "" {
		p += "?snapshot=" + url.QueryEscape(snapshot)
	}
	return m, c.Do(ctx, "GET", p, nil, &m)
}

// SetMetadata writes a disk database key of a disk.
func (c *Client) SetMetadata(ctx context.Context, diskName, key, value string) error {
	return c.Do(ctx, "PUT", "/api/v1/disks/"+Esc(diskName)+"/metadata/"+Esc(key), map[string]string{"value": value}, nil)
}
