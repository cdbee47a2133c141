/* The one place the library writes files (checkpoints, config.ini, PNGs,
 * .npy files, metrics.jsonl), with one durability rule per kind of file and
 * one message for a failure.
 *
 * Whole files are replaced atomically: the bytes go to PATH.tmp-PID in the
 * same folder (rename() only replaces atomically within one file system),
 * then fflush, fsync, close, rename over PATH and fsync of the folder (so
 * that the rename itself survives a power cut). A reader, or a process
 * killed at any moment, sees the old file or the whole new one, never half
 * of one; on failure the temporary file is removed and PATH is untouched.
 *
 * Append-only files (metrics.jsonl) get each line flushed to the kernel
 * (it survives the process being killed), and an fsync on request: the
 * trainer asks for one before each checkpoint, so the lines up to a
 * checkpoint's step are on disk whenever the checkpoint is. An fsync per
 * line would cost a disk flush every logged step for lines that a resume
 * drops anyway (it keeps only the lines up to the checkpoint's step). */
#ifndef VAE_ATOMIC_FILE_H
#define VAE_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "vae/vae.h"

typedef struct vae_atomic_file {
    FILE *stream;            /* the temporary file: write through this (or vae_atomic_file_write) */
    char *path;              /* the final name */
    char *temporary_path;    /* PATH.tmp-PID */
    const char *what;        /* "checkpoint", "PNG", ... for messages */
    int error_number;        /* the first failure's errno, 0 while all is well */
} vae_atomic_file;

/* Opens PATH.tmp-PID for writing. what names the kind of file in messages. */
vae_status vae_atomic_file_open(vae_atomic_file *file, const char *path, const char *what);
/* Writes length bytes; returns 0, or the errno of the first failure (also
 * kept for commit, which then reports it). */
int vae_atomic_file_write(vae_atomic_file *file, const void *bytes, size_t length);
/* Records a failure seen while writing through file->stream by other code
 * (libpng's callbacks): commit then reports it and replaces nothing. */
void vae_atomic_file_fail(vae_atomic_file *file, int error_number);
/* Flushes, fsyncs, closes and renames over the final name, then fsyncs the
 * folder. After any failure (earlier or here): removes the temporary file,
 * leaves the final name as it was and returns VAE_ERROR_IO with the message
 * of vae_file_write_error. Frees the names either way. */
vae_status vae_atomic_file_commit(vae_atomic_file *file);
/* Gives up: closes and removes the temporary file, frees the names. */
void vae_atomic_file_abort(vae_atomic_file *file);
/* Open, write, commit in one call. */
vae_status vae_atomic_write(const char *path, const void *bytes, size_t length, const char *what);

/* fsync of the folder that holds path (makes a rename or a new name durable).
 * File systems that cannot sync a folder (EINVAL) are accepted. */
vae_status vae_sync_parent_folder(const char *path);

/* Append-only text files. keep_existing 0 starts the file afresh. */
vae_status vae_append_file_open(FILE **out, const char *path, int keep_existing, const char *what);
/* Writes line and a newline, flushed to the kernel. */
vae_status vae_append_file_write_line(FILE *file, const char *path, const char *line, const char *what);
/* fsync: the lines written so far are on disk. */
vae_status vae_append_file_sync(FILE *file, const char *path, const char *what);

/* The message for a failed write, for every file the library writes:
 * "PATH: cannot write the WHAT: <strerror>", with the cause spelled out for
 * a full disk or quota and for a read-only or forbidden folder. Returns
 * VAE_ERROR_IO. */
vae_status vae_file_write_error(const char *path, const char *what, int error_number);

#endif
