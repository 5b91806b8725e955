/*
 * vm_basic_types.h: the scalar types vixDiskLib.h is written in.
 *
 * Part of vdisk's open libvixDiskLib (https://github.com/vdisk-project/vdisk),
 * written for vdisk; the names are those VDDK programs already use, so that
 * they compile unchanged against this header.
 */
#ifndef VDISK_VM_BASIC_TYPES_H
#define VDISK_VM_BASIC_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifndef VDISK_HAVE_VM_SCALARS
#define VDISK_HAVE_VM_SCALARS 1
typedef uint64_t uint64;
typedef int64_t  int64;
typedef uint32_t uint32;
typedef int32_t  int32;
typedef uint16_t uint16;
typedef int16_t  int16;
typedef uint8_t  uint8;
typedef int8_t   int8;
/* Bool is one byte, as in VMware's headers. */
typedef char     Bool;
#endif

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

#endif /* VDISK_VM_BASIC_TYPES_H */
