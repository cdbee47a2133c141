#include "io/record_framing.h"

#include <errno.h>
#include <isa-l/crc.h>
#include <limits.h>

#include "base/error.h"
#include "io/atomic_file.h"

/* TFRecord's constant for vae_record_masked_crc. */
#define RECORD_MASK_DELTA 0xa282ead8u

uint32_t vae_crc32c(const void *data, size_t length) {
    /* ISA-L's crc32_iscsi neither inverts the initial value nor the result:
     * the standard CRC32C is both, done here. It takes an int length, so a
     * longer buffer goes in pieces. */
    uint32_t crc = 0xFFFFFFFFu;
    const unsigned char *bytes = data;
    while (length > 0) {
        size_t piece = length > (size_t)INT_MAX ? (size_t)INT_MAX : length;
        crc = crc32_iscsi((unsigned char *)bytes, (int)piece, crc);
        bytes += piece;
        length -= piece;
    }
    return ~crc;
}

uint32_t vae_record_masked_crc(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + RECORD_MASK_DELTA;
}

static void put_le32(unsigned char *out, uint32_t value) {
    for (int i = 0; i < 4; ++i) out[i] = (unsigned char)(value >> (8 * i));
}

void vae_record_header(uint64_t length, unsigned char header[VAE_RECORD_HEADER_BYTES]) {
    for (int i = 0; i < 8; ++i) header[i] = (unsigned char)(length >> (8 * i));
    put_le32(header + 8, vae_record_masked_crc(vae_crc32c(header, 8)));
}

void vae_record_footer(const void *data, size_t length, unsigned char footer[VAE_RECORD_FOOTER_BYTES]) {
    put_le32(footer, vae_record_masked_crc(vae_crc32c(data, length)));
}

vae_status vae_record_write(FILE *stream, const char *path, const void *data, size_t length) {
    unsigned char header[VAE_RECORD_HEADER_BYTES], footer[VAE_RECORD_FOOTER_BYTES];
    vae_record_header((uint64_t)length, header);
    vae_record_footer(data, length, footer);
    errno = 0;
    if (fwrite(header, 1, sizeof header, stream) != sizeof header ||
        (length > 0 && fwrite(data, 1, length, stream) != length) ||
        fwrite(footer, 1, sizeof footer, stream) != sizeof footer || fflush(stream) != 0)
        return vae_file_write_error(path, "TensorBoard event file", errno ? errno : EIO);
    return VAE_OK;
}
