/* Atomic whole-file writes and append-only files; see atomic_file.h. */
#define _POSIX_C_SOURCE 200809L

#include "io/atomic_file.h"
#include "base/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the user can do about the common causes. */
static const char *failure_hint(int error_number) {
    switch (error_number) {
    case ENOSPC:
#ifdef EDQUOT
    case EDQUOT:
#endif
        return " (disk full: free some space and run again; the earlier file, if any, is untouched)";
    case EROFS:
    case EACCES:
    case EPERM:
        return " (the folder is not writable)";
    default:
        return "";
    }
}

/* detail (may be NULL) goes between the kind of file and the cause. */
static vae_status write_error(const char *path, const char *what, const char *detail, int error_number) {
    if (error_number == 0) error_number = EIO;
    return vae_error(VAE_ERROR_IO, "%s: cannot write the %s: %s%s%s%s", path, what, detail ? detail : "",
                     detail ? ": " : "", strerror(error_number), failure_hint(error_number));
}

vae_status vae_file_write_error(const char *path, const char *what, int error_number) {
    return write_error(path, what, NULL, error_number);
}

/* errno after a failed stdio call, or EIO when the call did not set one. */
static int stdio_errno(void) { return errno ? errno : EIO; }

static void release_names(vae_atomic_file *file) {
    free(file->path);
    free(file->temporary_path);
    file->path = NULL;
    file->temporary_path = NULL;
}

vae_status vae_atomic_file_open(vae_atomic_file *file, const char *path, const char *what) {
    memset(file, 0, sizeof *file);
    file->what = what ? what : "file";
    if (!path || !path[0]) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "cannot write the %s: empty path", file->what);
    /* The same folder as path: rename() is atomic only within a file
     * system. The pid keeps two processes' temporary files apart. */
    size_t temporary_size = strlen(path) + 32;
    file->path = strdup(path);
    file->temporary_path = malloc(temporary_size);
    if (!file->path || !file->temporary_path) {
        release_names(file);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    snprintf(file->temporary_path, temporary_size, "%s.tmp-%ld", path, (long)getpid());
    file->stream = fopen(file->temporary_path, "wb");
    if (!file->stream) {
        int error_number = errno;
        char detail[64 + 4096];
        snprintf(detail, sizeof detail, "cannot create %s", file->temporary_path);
        vae_status status = write_error(path, file->what, detail, error_number);
        release_names(file);
        return status;
    }
    return VAE_OK;
}

int vae_atomic_file_write(vae_atomic_file *file, const void *bytes, size_t length) {
    if (file->error_number) return file->error_number;
    errno = 0;
    if (length > 0 && fwrite(bytes, 1, length, file->stream) != length) file->error_number = stdio_errno();
    return file->error_number;
}

void vae_atomic_file_fail(vae_atomic_file *file, int error_number) {
    if (!file->error_number) file->error_number = error_number ? error_number : EIO;
}

void vae_atomic_file_abort(vae_atomic_file *file) {
    if (file->stream) fclose(file->stream);
    file->stream = NULL;
    if (file->temporary_path) remove(file->temporary_path);
    release_names(file);
}

vae_status vae_atomic_file_commit(vae_atomic_file *file) {
    int error_number = file->error_number;
    errno = 0;
    if (!error_number && fflush(file->stream) != 0) error_number = stdio_errno();
    /* The data reach the disk before the new name points at them. */
    if (!error_number && fsync(fileno(file->stream)) != 0) error_number = errno;
    errno = 0;
    if (fclose(file->stream) != 0 && !error_number) error_number = stdio_errno();
    file->stream = NULL;
    if (!error_number && rename(file->temporary_path, file->path) != 0) error_number = errno;
    vae_status status = VAE_OK;
    if (error_number) {
        status = write_error(file->path, file->what, NULL, error_number);
        remove(file->temporary_path);
    } else {
        status = vae_sync_parent_folder(file->path);
    }
    release_names(file);
    return status;
}

vae_status vae_atomic_write(const char *path, const void *bytes, size_t length, const char *what) {
    vae_atomic_file file;
    VAE_TRY(vae_atomic_file_open(&file, path, what));
    vae_atomic_file_write(&file, bytes, length);
    return vae_atomic_file_commit(&file);
}

vae_status vae_sync_parent_folder(const char *path) {
    const char *slash = strrchr(path, '/');
    char *folder = NULL;
    if (!slash) folder = strdup(".");
    else if (slash == path) folder = strdup("/");
    else folder = strndup(path, (size_t)(slash - path));
    if (!folder) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    int descriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    vae_status status = VAE_OK;
    if (descriptor < 0) {
        status = write_error(path, "folder entry", "written, but its folder cannot be opened to sync it", errno);
    } else {
        /* Some file systems cannot fsync a folder (EINVAL); the rename stands. */
        if (fsync(descriptor) != 0 && errno != EINVAL)
            status = write_error(path, "folder entry", "written, but syncing its folder failed", errno);
        close(descriptor);
    }
    free(folder);
    return status;
}

vae_status vae_append_file_open(FILE **out, const char *path, int keep_existing, const char *what) {
    *out = fopen(path, keep_existing ? "a" : "w");
    if (!*out) return write_error(path, what, "cannot open it", errno);
    /* A new file's name must survive a power cut as well as its lines. */
    vae_status status = vae_sync_parent_folder(path);
    if (status != VAE_OK) {
        fclose(*out);
        *out = NULL;
    }
    return status;
}

vae_status vae_append_file_write_line(FILE *file, const char *path, const char *line, const char *what) {
    errno = 0;
    if (fputs(line, file) == EOF || fputc('\n', file) == EOF || fflush(file) != 0)
        return write_error(path, what, NULL, stdio_errno());
    return VAE_OK;
}

vae_status vae_append_file_sync(FILE *file, const char *path, const char *what) {
    errno = 0;
    if (fflush(file) != 0) return write_error(path, what, NULL, stdio_errno());
    if (fsync(fileno(file)) != 0) return write_error(path, what, "syncing it to disk", errno);
    return VAE_OK;
}
