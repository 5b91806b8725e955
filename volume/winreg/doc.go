// Package winreg reads Windows registry hive files (the regf format) and,
// from a mounted Windows system volume, what package volume needs to
// know about the installed Windows: [OSInfo] (product name, version,
// build and edition from SOFTWARE\Microsoft\Windows NT\CurrentVersion)
// and [DriveLetters] (SYSTEM\MountedDevices: which partition each drive
// letter was given to).
//
// # Format
//
// A hive is a 4 KiB base block ("regf": version, root cell offset, size
// of the hive bins) followed by hive bins ("hbin") of cells. A cell is a
// 32-bit size (negative when allocated) and its data; cell offsets count
// from the first hive bin. Keys are "nk" cells; their subkeys are listed
// by "lf", "lh" or "li" cells, or by "ri" cells of such lists; their
// values are a cell of offsets to "vk" cells. Data of up to 4 bytes is
// kept in the vk cell itself, larger data in one cell, and data over
// 16,344 bytes in hives of version 1.4 and later in a "db" cell listing
// segments. Names are Latin-1 when the compressed-name flag is set, else
// UTF-16LE. Key and value lookups ignore case, as Windows does.
//
// The reader is written for this package. www.velocidex.com/golang/regparser
// was considered and not used: like go-ntfs it is a forensic parser whose
// key and value walks return no errors (a broken subkey list reads as no
// subkeys), so damage could not be told from absence.
//
// # Not supported
//
// Transaction logs (SYSTEM.LOG1, .LOG2) are not replayed: a hive from a
// volume Windows did not shut down cleanly reads as its primary file
// stands. The base block's checksum and sequence numbers are not
// required to agree. Security descriptors, class names and key times
// are not read. Values are read, never written.
//
// # Hostile input
//
// Every offset is checked against the hive bins before it is read, every
// cell's size against the bins and a 16 MiB limit, every list's count
// against its cell, and value data against 16 MiB; "ri" lists nest at
// most 8 deep and a key's lists may not hold more subkeys than the key
// claims (at most 1,048,576). Broken structures give errors matching
// disk.ErrCorrupt; the reader never panics on input (FuzzHive).
//
// # Drive letters
//
// [DriveLetters] encodes each partition so that package volume can match
// it to its own tables: "mbr:0x1234abcd:1048576" is an MBR disk's
// signature (as volume.Table.DiskID prints it) and the partition's byte
// offset (volume.Partition.Start); "gpt:GUID" is a GPT partition's
// unique GUID in upper case (volume.Partition.GUID).
//
// # Testing
//
// Hives are built in the tests by a small writer of their own
// (writer_test.go), which hivexget must read back; hivexsh (Debian's
// libhivex-bin) and hivex's Python binding (python3-hivex) write hives
// the reader must read. TestOnNTFS reads hives from an NTFS volume
// through package ntfs.
package winreg
