package disk

// Image locking interoperates with qemu's (block/file-posix.c, "image
// locking"). qemu describes each opener of an image file by the block-layer
// permissions it uses and those it lets others use, and publishes both as
// shared open file description locks on single bytes of the file: byte
// 100+i means "I use permission i", byte 200+i "I do not let others use
// permission i". Nothing is ever written there; the bytes need not exist.
// An opener then tests, with an exclusive test lock, the counterpart bytes:
// 200+i for each permission it uses, 100+i for each one it does not share.
// A lock held by any other open file description, in this process or
// another, is a conflict, and the open fails.
//
// vdisk takes what qemu takes for a VMDK (measured against qemu 7.2 in
// /proc/locks and read in block.c's default permissions for a format's
// children):
//
//	file                          reading            writing
//	                              uses   unshares    uses          unshares
//	descriptor, sparse extent,    read   write,      read, write,  write,
//	raw image                            resize      resize        resize
//	flat extent                   read   resize      read, write,  resize
//	                                                 resize
//
// "read" is consistent read. A writer thus excludes every other writer and
// every reader that does not force sharing, and a reader excludes writers.
// For a raw image qemu's own raw driver shares write (two qemu writers may
// open one raw file); vdisk does not, so that it never writes an image
// another program writes, and a qemu writer refuses an image vdisk writes.

// perm is a qemu block-layer permission bit; its index is the lock byte's
// offset from the bases.
type perm uint8

const (
	permConsistentRead perm = 1 << iota
	permWrite
	permWriteUnchanged
	permResize
	permGraphMod
	numPerms = 5
)

const (
	lockPermBase   = 100 // 100+i: the holder uses permission i
	lockSharedBase = 200 // 200+i: the holder does not share permission i
)

var permNames = [numPerms]string{"consistent read", "write", "write unchanged", "resize", "change children"}

// ImageLock describes how an image file is used: whether the opener writes
// it, and whether the file holds only guest data (a flat extent, whose
// layout no metadata describes) rather than metadata.
type ImageLock struct {
	Write bool
	Data  bool
}

// perms returns the permissions used and those not shared.
func (l ImageLock) perms() (use, unshare perm) {
	use = permConsistentRead
	unshare = permWrite | permResize
	if l.Write {
		use |= permWrite | permResize
	}
	if l.Data {
		unshare = permResize
	}
	return use, unshare
}

// LockImage takes qemu-compatible image locks on f for the use l
// describes, and fails with ErrBusy when another open of the file (by
// qemu, another vdisk or this process) conflicts, for example "failed to
// get "write" lock: image is in use by another process". The locks belong
// to f's open file description and go when it is closed. Files that are
// not backed by an operating system descriptor, and systems without open
// file description locks, are not locked. Callers add the file's name.
//
// A child process forked while f is open shares its open file description
// until it execs, so the locks of a file this process has just closed can
// linger for that moment. A conflict is therefore looked at again, after
// the process's forks in flight have finished, before it is reported.
func LockImage(f File, l ImageLock) error {
	x, ok := f.(interface{ Fd() uintptr })
	if !ok {
		return nil
	}
	fd := x.Fd()
	if fd == ^uintptr(0) {
		return nil
	}
	use, unshare := l.perms()
	return lockImageFd(fd, use, unshare)
}

func lockConflict(what string, p int) error {
	return Errorf(ErrBusy, "failed to get %s%q lock: image is in use by another process", what, permNames[p])
}
