package disk

import "golang.org/x/sys/unix"

// startWriteBack starts the write-back of every dirty page of the file,
// without waiting for it.
func startWriteBack(fd uintptr) error {
	return unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
