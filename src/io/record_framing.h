/* The record framing of TensorBoard event files (TensorFlow's TFRecord):
 * each record is its length (uint64, little-endian), the masked CRC32C of
 * those 8 bytes, the data, and the masked CRC32C of the data (both CRCs
 * uint32, little-endian). The CRC32C is Intel ISA-L's (crc32_iscsi). */
#ifndef VAE_RECORD_FRAMING_H
#define VAE_RECORD_FRAMING_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vae/vae.h"

#define VAE_RECORD_HEADER_BYTES 12
#define VAE_RECORD_FOOTER_BYTES 4

/* The standard CRC32C (Castagnoli; initial value and final xor 0xFFFFFFFF):
 * "123456789" gives 0xE3069283. */
uint32_t vae_crc32c(const void *data, size_t length);
/* TFRecord's mask: a CRC stored beside data that itself holds CRCs would
 * otherwise make the data's CRC trivially predictable. */
uint32_t vae_record_masked_crc(uint32_t crc);
/* The 12 bytes before a record's data. */
void vae_record_header(uint64_t length, unsigned char header[VAE_RECORD_HEADER_BYTES]);
/* The 4 bytes after a record's data. */
void vae_record_footer(const void *data, size_t length, unsigned char footer[VAE_RECORD_FOOTER_BYTES]);
/* Writes one framed record to stream and flushes it, so that a crash later
 * keeps it; an error names path and what failed. */
vae_status vae_record_write(FILE *stream, const char *path, const void *data, size_t length);

#endif
