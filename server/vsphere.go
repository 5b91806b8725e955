package server

import (
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/hostapi"
)

// vSphere-style names. VDDK programs name a VM by its managed-object ID
// ("moref=vm-N"), a snapshot by its ID ("snapshot-N", which the datastore
// already uses) and a disk by its datastore path ("[datastore1]
// VM/disk.vmdk"). The server derives the first and the last from names
// the datastore keeps, so nothing more is stored: a VM's ID is a hash of
// its name (stable for the VM's life; VMs are not renamed), a disk's path
// is made of its datastore, VM and name.

// defaultDatastore is the vSphere name of the data directory's own
// datastore ("default" in DiskInfo.Datastore).
const defaultDatastore = "datastore1"

// vmMoRef is the managed-object ID of the VM named name.
func vmMoRef(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return "vm-" + strconv.FormatUint(uint64(h.Sum32()), 10)
}

// datastorePath is the vSphere path of a disk's file.
func datastorePath(in hostapi.DiskInfo) string {
	ds := in.Datastore
	if ds == "" || ds == "default" {
		ds = defaultDatastore
	}
	dir := in.VM
	if dir == "" {
		dir = in.Name
	}
	return "[" + ds + "] " + dir + "/" + in.Name + ".vmdk"
}

func withPath(in hostapi.DiskInfo) hostapi.DiskInfo {
	if in.Name != "" {
		in.DatastorePath = datastorePath(in)
	}
	return in
}

func withMoRef(in hostapi.VMInfo) hostapi.VMInfo {
	in.MoRef = vmMoRef(in.Name)
	for i := range in.Disks {
		in.Disks[i] = withPath(in.Disks[i])
	}
	return in
}

// resolveVM returns the name of the VM that name or managed-object ID
// ref names; an unknown one is returned unchanged (the lookup that
// follows reports it).
func (s *Server) resolveVM(ref string) string {
	if !strings.HasPrefix(ref, "vm-") {
		return ref
	}
	if _, err := s.store.VM(ref); err == nil {
		return ref // a VM really named vm-…
	}
	for _, v := range s.store.VMs() {
		if vmMoRef(v.Name) == ref {
			return v.Name
		}
	}
	return ref
}

// resolveVMPath rewrites the {vm} path value of r from a managed-object
// ID to the VM's name.
func (s *Server) resolveVMPath(r *http.Request) {
	if v := r.PathValue("vm"); v != "" {
		r.SetPathValue("vm", s.resolveVM(v))
	}
}

// disksByPath lists the disks, or with a datastorePath query only the
// disk at that path (and with vm only if that VM, by name or ID, owns
// it).
func (s *Server) disksByPath(r *http.Request) []hostapi.DiskInfo {
	q := r.URL.Query()
	path, vm := q.Get("datastorePath"), q.Get("vm")
	if vm != "" {
		vm = s.resolveVM(vm)
	}
	out := []hostapi.DiskInfo{}
	for _, d := range s.store.Disks() {
		d = withPath(d)
		if path != "" && d.DatastorePath != path {
			continue
		}
		if vm != "" && d.VM != vm {
			continue
		}
		out = append(out, d)
	}
	return out
}
