/* Crash-safe file replacement: write a temporary in the target's directory, fsync it,
 * rename it over the target, fsync the directory so the rename itself is durable.
 * Until the rename the old file is untouched; after it the new one is complete. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

struct cg_atomic_file {
    char *path;
    char *tmp;
    FILE *fp;
};

static void af_free(cg_atomic_file *af) {
    free(af->path);
    free(af->tmp);
    free(af);
}

cg_status cg_atomic_open(const char *path, cg_atomic_file **out, FILE **fp) {
    CG_ARG_NOT_NULL(path, "cg_atomic_open");
    CG_ARG_NOT_NULL(out, "cg_atomic_open");
    CG_ARG_NOT_NULL(fp, "cg_atomic_open");
    if (!path[0]) return CG_FAIL(CG_E_INVALID, "cg_atomic_open: path is empty");
    size_t n = strlen(path);
    if (path[n - 1] == '/') return CG_FAIL(CG_E_INVALID, "cg_atomic_open: %s: path names a directory", path);
    cg_atomic_file *af = calloc(1, sizeof *af);
    if (af) af->path = malloc(n + 1);
    if (af) af->tmp = malloc(n + 16);
    if (!af || !af->path || !af->tmp) {
        if (af) af_free(af);
        return CG_FAIL(CG_E_OOM, "cg_atomic_open: out of memory");
    }
    memcpy(af->path, path, n + 1);
    snprintf(af->tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(af->tmp);
    if (fd < 0) {
        cg_status s = CG_FAIL(CG_E_IO, "%s: cannot create a temporary file next to it: %s", path, strerror(errno));
        af_free(af);
        return s;
    }
    /* mkstemp makes 0600; keep the mode of the file being replaced, else rw-r--r-- */
    struct stat stt;
    mode_t mode = (stat(path, &stt) == 0) ? (stt.st_mode & 07777) : 0644;
    (void)fchmod(fd, mode); /* best effort: the data is safe either way */
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        cg_status s = CG_FAIL(CG_E_IO, "%s: fdopen failed: %s", af->tmp, strerror(errno));
        close(fd);
        unlink(af->tmp);
        af_free(af);
        return s;
    }
    *out = af;
    *fp = af->fp;
    return CG_OK;
}

void cg_atomic_abort(cg_atomic_file *af) {
    if (!af) return;
    if (af->fp) fclose(af->fp);
    unlink(af->tmp);
    af_free(af);
}

static cg_status fsync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return CG_FAIL(CG_E_IO, "%s: directory name too long to fsync", path);
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return CG_FAIL(CG_E_IO, "%s: cannot open directory %s to fsync: %s", path, dir, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    /* some filesystems refuse fsync on directories; the rename is done, do not fail for it */
    if (r != 0 && e != EINVAL && e != EBADF)
        return CG_FAIL(CG_E_IO, "%s: fsync of directory %s failed: %s", path, dir, strerror(e));
    return CG_OK;
}

cg_status cg_atomic_commit(cg_atomic_file *af) {
    CG_ARG_NOT_NULL(af, "cg_atomic_commit");
    cg_status s = CG_OK;
    FILE *fp = af->fp;
    af->fp = NULL;
    if (ferror(fp)) s = CG_FAIL(CG_E_IO, "%s: a write to the temporary file failed", af->path);
    if (s == CG_OK && fflush(fp) != 0)
        s = CG_FAIL(CG_E_IO, "%s: flushing %s failed: %s", af->path, af->tmp, strerror(errno));
    if (s == CG_OK && fsync(fileno(fp)) != 0)
        s = CG_FAIL(CG_E_IO, "%s: fsync of %s failed: %s", af->path, af->tmp, strerror(errno));
    if (fclose(fp) != 0 && s == CG_OK)
        s = CG_FAIL(CG_E_IO, "%s: closing %s failed: %s", af->path, af->tmp, strerror(errno));
    if (s == CG_OK && rename(af->tmp, af->path) != 0)
        s = CG_FAIL(CG_E_IO, "%s: rename from %s failed: %s", af->path, af->tmp, strerror(errno));
    if (s != CG_OK) {
        unlink(af->tmp);
        af_free(af);
        return s;
    }
    s = fsync_dir(af->path);
    af_free(af);
    return s;
}
