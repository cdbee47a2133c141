/* A run folder belongs to one run (include/vae/run_folder.h): creating it,
 * its lock, and what a new, resumed or restarted run may find in it. */
#define _DEFAULT_SOURCE /* flock */
#define _POSIX_C_SOURCE 200809L

#include "vae/run_folder.h"
#include "base/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* One folder this process holds the lock of; claims count the holders. */
struct vae_run_folder {
    dev_t device;
    ino_t inode;
    int lock_descriptor;
    int claims;
    struct vae_run_folder *next;
};

static pthread_mutex_t held_folders_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct vae_run_folder *held_folders = NULL;

/* mkdir -p: the folder and any missing parents. */
static vae_status make_folder(const char *path) {
    char partial[VAE_PATH_MAX + 64];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof partial) return vae_error(VAE_ERROR_IO, "bad output folder name '%s'", path);
    memcpy(partial, path, length + 1);
    for (size_t i = 1; i <= length; ++i) {
        if (partial[i] != '/' && partial[i] != '\0') continue;
        char saved = partial[i];
        partial[i] = '\0';
        if (mkdir(partial, 0777) != 0 && errno != EEXIST)
            return vae_error(VAE_ERROR_IO, "cannot create output folder %s: %s", path, strerror(errno));
        partial[i] = saved;
    }
    struct stat info;
    if (stat(path, &info) != 0 || !S_ISDIR(info.st_mode))
        return vae_error(VAE_ERROR_IO, "cannot create output folder %s: it exists and is not a folder", path);
    return VAE_OK;
}

static int starts_with(const char *text, const char *prefix) { return strncmp(text, prefix, strlen(prefix)) == 0; }

static int ends_with(const char *text, const char *suffix) {
    size_t length = strlen(text), suffix_length = strlen(suffix);
    return length >= suffix_length && strcmp(text + length - suffix_length, suffix) == 0;
}

/* The files the engine writes into a run folder, by name. */
static int engine_file(const char *name) {
    return (starts_with(name, "checkpoint") && ends_with(name, ".safetensors")) || strcmp(name, "metrics.jsonl") == 0 ||
           strcmp(name, "config.ini") == 0 || (starts_with(name, "samples_epoch_") && ends_with(name, ".png")) ||
           (starts_with(name, "reconstructions_epoch_") && ends_with(name, ".png"));
}

/* A process killed while writing leaves its temporary file behind (the
 * target itself is never half-written, io/atomic_file.h): with the lock held,
 * no other writer can own one, so the engine's leftovers are removed. */
static int stale_temporary_file(const char *name) {
    const char *owned[] = {"checkpoint", "metrics.jsonl", "config.ini", "samples", "reconstructions"};
    if (!strstr(name, ".tmp")) return 0;
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; ++i)
        if (starts_with(name, owned[i])) return 1;
    return 0;
}

/* Removes the entries of folder that select() picks. */
static vae_status remove_entries(const char *folder_path, int (*select)(const char *name)) {
    DIR *folder = opendir(folder_path);
    if (!folder) return vae_error(VAE_ERROR_IO, "cannot read the output folder %s: %s", folder_path, strerror(errno));
    vae_status status = VAE_OK;
    struct dirent *entry;
    while (status == VAE_OK && (entry = readdir(folder)) != NULL) {
        if (!select(entry->d_name)) continue;
        char path[VAE_PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", folder_path, entry->d_name);
        if (remove(path) != 0 && errno != ENOENT)
            status = vae_error(VAE_ERROR_IO, "cannot remove %s: %s", path, strerror(errno));
    }
    closedir(folder);
    return status;
}

/* The pid written in a lock file, or 0 when it cannot be read. */
static long holder_pid(int descriptor) {
    char text[32] = "";
    ssize_t length = pread(descriptor, text, sizeof text - 1, 0);
    if (length <= 0) return 0;
    text[length] = '\0';
    return strtol(text, NULL, 10);
}

/* Takes the folder's lock for this process, or says who holds it. */
static vae_status lock_folder(const char *path, const struct stat *info, struct vae_run_folder **out) {
    char lock_path[VAE_PATH_MAX + 64];
    snprintf(lock_path, sizeof lock_path, "%s/%s", path, VAE_RUN_FOLDER_LOCK_NAME);
    int descriptor = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (descriptor < 0)
        return vae_error(VAE_ERROR_IO, "%s: cannot create the run folder's lock file: %s", lock_path, strerror(errno));
    int locked;
    while ((locked = flock(descriptor, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {}
    if (locked != 0) {
        int error_number = errno;
        long pid = holder_pid(descriptor);
        close(descriptor);
        if (error_number != EWOULDBLOCK)
            return vae_error(VAE_ERROR_IO, "%s: cannot lock the run folder: %s", lock_path, strerror(error_number));
        char holder[64] = "another process (pid unknown)";
        if (pid > 0) snprintf(holder, sizeof holder, "another process (pid %ld)", pid);
        return vae_error(VAE_ERROR_BUSY,
                         "%s: this run folder is in use by %s, which holds its lock %s; a folder belongs to one run: "
                         "wait for that run to end or stop it, or choose another --out",
                         path, holder, lock_path);
    }
    /* The pid, for the message of the next one who tries. */
    char text[32];
    int length = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(descriptor, 0) != 0 || pwrite(descriptor, text, (size_t)length, 0) != length) {
        vae_status status =
            vae_error(VAE_ERROR_IO, "%s: cannot write the run folder's lock file: %s", lock_path, strerror(errno));
        close(descriptor);
        return status;
    }
    struct vae_run_folder *folder = calloc(1, sizeof *folder);
    if (!folder) {
        close(descriptor);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    folder->device = info->st_dev;
    folder->inode = info->st_ino;
    folder->lock_descriptor = descriptor;
    *out = folder;
    return VAE_OK;
}

/* What the folder may hold for this kind of start. */
static vae_status apply_start(const char *path, vae_run_start start) {
    char checkpoint[VAE_PATH_MAX + 64];
    snprintf(checkpoint, sizeof checkpoint, "%s/checkpoint.safetensors", path);
    if (start == VAE_RUN_START_NEW && access(checkpoint, F_OK) == 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s exists: this folder holds the model of an earlier run; continue it (vae train --resume), "
                         "start over and replace it (vae train --force), or choose another --out",
                         checkpoint);
    if (start == VAE_RUN_START_OVER) return remove_entries(path, engine_file);
    return VAE_OK;
}

static void release_locked(struct vae_run_folder *folder) {
    if (--folder->claims > 0) return;
    for (struct vae_run_folder **link = &held_folders; *link; link = &(*link)->next)
        if (*link == folder) {
            *link = folder->next;
            break;
        }
    /* Closing the last descriptor drops the flock. The file stays: removing
     * it would race with a process that has just opened it. */
    close(folder->lock_descriptor);
    free(folder);
}

vae_status vae_run_folder_claim(const char *path, vae_run_start start, vae_run_folder **out) {
    if (!out) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_run_folder_claim: out is NULL");
    *out = NULL;
    if (!path || !path[0]) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_run_folder_claim: empty folder name");
    if (start != VAE_RUN_START_NEW && start != VAE_RUN_START_RESUME && start != VAE_RUN_START_OVER)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_run_folder_claim: unknown start %d", (int)start);
    VAE_TRY(make_folder(path));
    struct stat info;
    if (stat(path, &info) != 0)
        return vae_error(VAE_ERROR_IO, "cannot read the output folder %s: %s", path, strerror(errno));

    pthread_mutex_lock(&held_folders_mutex);
    struct vae_run_folder *folder = held_folders;
    while (folder && !(folder->device == info.st_dev && folder->inode == info.st_ino)) folder = folder->next;
    vae_status status = VAE_OK;
    if (folder) {
        folder->claims += 1;
    } else {
        status = lock_folder(path, &info, &folder);
        if (status == VAE_OK) {
            folder->claims = 1;
            folder->next = held_folders;
            held_folders = folder;
            status = remove_entries(path, stale_temporary_file);
        }
    }
    if (status == VAE_OK) status = apply_start(path, start);
    if (status != VAE_OK && folder) release_locked(folder);
    pthread_mutex_unlock(&held_folders_mutex);
    if (status == VAE_OK) *out = folder;
    return status;
}

void vae_run_folder_release(vae_run_folder *folder) {
    if (!folder) return;
    pthread_mutex_lock(&held_folders_mutex);
    release_locked(folder);
    pthread_mutex_unlock(&held_folders_mutex);
}
