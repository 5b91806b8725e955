// Package vmdk reads, writes, creates, checks and repairs VMware virtual
// disks in every variant: hosted sparse (monolithic and split),
// flat (monolithic, split and VMFS), streamOptimized, vmfsSparse (COWD) and
// SEsparse deltas, descriptors with several extents including ZERO, RDONLY
// and NOACCESS ones, and snapshot chains and linked clones.
//
// reference/vmdk-format.md (in the project's shared docs) is the format
// reference; section numbers in comments (§3.4) point into it.
package vmdk
