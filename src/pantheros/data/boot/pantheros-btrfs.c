/* pantheros-btrfs: the btrfs work of the boot step that an initrd's tools cannot do (Debian's
 * coreutils has no `mv --exchange`; btrfs-progs prints subvolume facts for people), and the one
 * place that reads the old-roots location and its pin file and deletes an old root: the boot
 * step and `panther` (roots gc, roots list) both call it. Libc only.
 *
 * A name read from the disk is printed escaped, in the record format of the boot step's report:
 * printable ASCII (0x20-0x7e) as it is, a backslash doubled, any other byte as \xHH (lowercase);
 * so one line is one record whatever a name holds.
 *
 *   info PATH...             one line per PATH: "KIND ID PARENT DIRID GEN OTRANSID RO OTIME UUID
 *                             PARENT_UUID SIZE INO CTRANSID"; KIND is `subvolume`, or `directory`
 *                             for a plain directory (the fields then describe the subvolume
 *                             holding it); or just "missing", or "other" (a symlink, a file, not
 *                             on btrfs)
 *   snapshot SRC DEST        writable snapshot of the subvolume SRC at DEST
 *   snapshot-readonly SRC DEST  the same, read-only from its creation
 *   create DEST              empty subvolume at DEST
 *   exchange A B             swap A and B atomically (renameat2 RENAME_EXCHANGE)
 *   rename A B               rename A to B, never replacing B (renameat2 RENAME_NOREPLACE)
 *   readonly PATH            set the subvolume read-only (the kernel commits a flag change)
 *   writable PATH            set the subvolume writable (the same)
 *   sync PATH                commit the filesystem's current transaction
 *   lock DIR                 take the exclusive flock of the directory DIR and keep it until this
 *                             process exits (with `serve`: the whole run)
 *   serve                    run the commands read from stdin, one after the other, until its
 *                             end: each is its number of arguments then the arguments, every
 *                             one ended by a NUL byte; answered with the command's output and
 *                             "= RC", its exit code. The boot step runs one helper process for
 *                             its whole run this way, as its coprocess: a process costs a
 *                             millisecond, a request microseconds.
 *   check-path TOP REL...    per REL, one line: the first component of TOP/REL that is a symlink
 *                             or a mount point ("PREFIX is a symlink", "PREFIX is a mount point"),
 *                             or "ok" (a missing component or a file is the caller's to judge)
 *   old-roots TOP REL        the old roots of TOP/REL, oldest first (otransid): one line each,
 *                             "ID OTRANSID RO PINNED NAME" (PINNED 1: the pin file names its UUID)
 *   seal-old-roots TOP REL   make every writable old root read-only; prints the NAME of each
 *   delete-old-roots TOP REL ID...
 *                            delete each old root, nested subvolumes first, when it is still an
 *                             old root of TOP/REL, not pinned, and neither it nor anything in it
 *                             is mounted in any mount namespace; per ID: "deleted-nested ID PATH"
 *                             for each nested one, then "deleted ID NAME", or "kept ID WHY"
 *   pins TOP REL             the UUIDs the pin file names, one a line
 *   mounted TOP REL          where the subvolume TOP/REL, or anything in it, is mounted, in any
 *                             mount namespace: one line, or nothing; `mounted-here` looks in
 *                             this process's mount namespace only
 *   mounted-old-roots TOP REL  "ID WHERE" for each old root of TOP/REL mounted anywhere
 *   read-record TOP NAME     the record TOP/NAME as it is (a regular file of at most 4 KiB in the
 *                             record format, read without following a link or waiting on a FIFO);
 *                             exit 1 and the reason when there is none or it is not one
 *   space TOP                "FREE DATA_USED DATA_TOTAL META_USED META_TOTAL UNALLOCATED", bytes
 *   usage PATH               "BYTES COMPLETE": what the files of the subvolume PATH occupy
 *                             (COMPLETE 0: the walk stopped at its limit; at least that much)
 *   changed-since PATH TREE SINCE
 *                            what the leaves of the subvolume tree TREE (of the filesystem of
 *                             PATH) written after transaction SINCE hold, for `panther diff`
 *                             (pantheros.state.treediff, which reads the same in Python where
 *                             this helper is not): binary records, native byte order, each a
 *                             type byte then
 *                             I  an inode rewritten after SINCE: objectid, generation, transid,
 *                                size, nlink, mode, flags (u64 each)
 *                             R  a name of such an inode: objectid, directory, index (u64),
 *                                name length (u16), the name
 *                             S  indices of a changed directory's entries in those leaves:
 *                                directory (u64), count (u32), the indices (u64 each)
 *                             A  an entry added after SINCE to a changed directory: directory,
 *                                index, child (u64), type, is-a-subvolume (u8), name length
 *                                (u16), the name
 *   name-ok NAME...          one line: per NAME, 1 when it is a subvolume path the layout
 *                             allows (as the boot step's name_ok), else 0
 *   rollback ARGS...         the boot step (D155): the usual boot (a dirty root, and beside it
 *                             the fresh, writable root stage 2 prepared from the recorded
 *                             blank) is checked as the script checks it, swapped in and the
 *                             previous root archived, here; anything else, and any step that
 *                             fails, execs the script beside this program (pantheros-rollback)
 *                             with ARGS, which finds the state on disk and finishes
 *
 * TOP is a mounted top level (subvolid=5). REL is a path below it without an empty, `.` or `..`
 * component; it is walked one component at a time, never through a symlink or across a mount.
 * An old root of TOP/REL is a subvolume whose parent subvolume and parent directory (btrfs
 * parent_id and dirid) are exactly that location, found there without crossing a mount.
 * The pin file REL/.pantheros-pins.json is a JSON object of strings keyed by subvolume UUID (RFC
 * 8259, a regular file of at most 16 MiB); a pin file that cannot be read fails
 * every command that needs it, so nothing is deleted on a guess.
 * Mounts are read from /proc/PID/mountinfo of every process (one per mount namespace): a mount
 * of this filesystem whose subvolume is the one in question or nested in it, or whose root lies
 * at or below its path, counts.
 *
 * Exit codes: 0 done, 1 failed, 2 usage, 3 the name exists, 4 no space, 5 not empty, 6 an old
 * root was kept (delete-old-roots: the others were still deleted).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <endian.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <limits.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif
#define SUBVOLUME_ROOT_INO 256
#define TOP_LEVEL_ID 5
/* Read-only in the root item's flags, which GET_SUBVOL_INFO returns; the ioctl flag of
 * SUBVOL_GETFLAGS/SETFLAGS, BTRFS_SUBVOL_RDONLY, is a different bit. */
#define ROOT_SUBVOL_RDONLY (1ULL << 0)
#define PIN_FILE ".pantheros-pins.json"
#define PIN_FILE_MAX (16 << 20)
#define JSON_DEPTH_MAX 64
#define USAGE_ENTRIES_MAX 2000000

enum { OK = 0, FAILED = 1, USAGE = 2, EXISTS = 3, NO_SPACE = 4, NOT_EMPTY = 5, KEPT = 6 };

static int code_of(int err) {
    switch (err) {
    case EEXIST: return EXISTS;
    case ENOSPC: return NO_SPACE;
    case ENOTEMPTY: return NOT_EMPTY;
    default: return FAILED;
    }
}

static void put_escaped(FILE *out, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\')
            fputs("\\\\", out);
        else if (c >= 0x20 && c < 0x7f)
            putc(c, out);
        else
            fprintf(out, "\\x%02x", c);
    }
}

static void put_str(FILE *out, const char *s) { put_escaped(out, s, strlen(s)); }

/* "pantheros-btrfs: OP PATH: WHY" on stderr (PATH escaped); returns the exit code for errno. */
static int fail(const char *op, const char *path) {
    int err = errno;
    fprintf(stderr, "pantheros-btrfs: %s ", op);
    put_str(stderr, path);
    fprintf(stderr, ": %s\n", strerror(err));
    return code_of(err);
}

static int refuse(const char *op, const char *path, const char *why) {
    fprintf(stderr, "pantheros-btrfs: %s ", op);
    put_str(stderr, path);
    fprintf(stderr, ": %s\n", why);
    return FAILED;
}

static void *grow(void *array, size_t count, size_t *cap, size_t size) {
    if (count < *cap)
        return array;
    size_t more = *cap ? *cap * 2 : 16;
    void *bigger = realloc(array, more * size);
    if (bigger == NULL) {
        perror("pantheros-btrfs");
        exit(FAILED);
    }
    *cap = more;
    return bigger;
}

static char *copy(const char *s, size_t n) {
    char *out = malloc(n + 1);
    if (out == NULL) {
        perror("pantheros-btrfs");
        exit(FAILED);
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

/* --- subvolume facts ------------------------------------------------------------------------ */

struct subvol {
    uint64_t id, parent, dirid, generation, otransid, ctransid, ino;
    int readonly;
    long long otime, size;
    uint8_t uuid[16], parent_uuid[16];
};

static int open_dir(const char *path) {
    return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
}

static int open_dir_at(int dirfd, const char *name) {
    return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
}

/* 0, or -1 with errno (ENOTTY: not on btrfs). */
static int subvol_of(int fd, struct subvol *sv) {
    struct stat st;
    struct btrfs_ioctl_get_subvol_info_args args;
    memset(&args, 0, sizeof args);
    if (fstat(fd, &st) < 0)
        return -1;
    /* The kernel may return 1 (a search result) on success: only a negative value fails. */
    if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &args) < 0)
        return -1;
    sv->id = args.treeid;
    sv->parent = args.parent_id;
    sv->dirid = args.dirid;
    sv->generation = args.generation;
    sv->otransid = args.otransid;
    sv->ctransid = args.ctransid;
    sv->readonly = (args.flags & ROOT_SUBVOL_RDONLY) != 0;
    sv->otime = (long long)args.otime.sec;
    sv->size = (long long)st.st_size;
    sv->ino = (uint64_t)st.st_ino;
    memcpy(sv->uuid, args.uuid, 16);
    memcpy(sv->parent_uuid, args.parent_uuid, 16);
    return 0;
}

static void format_uuid(const uint8_t *uuid, char out[37]) {
    int zero = 1;
    for (int i = 0; i < 16; i++)
        zero &= uuid[i] == 0;
    if (zero) {
        strcpy(out, "-");
        return;
    }
    char *p = out;
    for (int i = 0; i < 16; i++)
        p += sprintf(p, "%s%02x", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : "", uuid[i]);
}

static int info(const char *path) {
    int fd = open_dir(path);
    if (fd < 0) {
        if (errno == ENOENT) {
            puts("missing");
            return OK;
        }
        if (errno == ENOTDIR || errno == ELOOP) {
            puts("other");
            return OK;
        }
        return fail("info", path);
    }
    struct subvol sv;
    int rc = subvol_of(fd, &sv);
    int err = errno;
    close(fd);
    if (rc < 0) {
        if (err != ENOTTY && err != EINVAL && err != EOPNOTSUPP) {
            errno = err;
            return fail("info", path);
        }
        puts("other");
        return OK;
    }
    char uuid[37], parent_uuid[37];
    format_uuid(sv.uuid, uuid);
    format_uuid(sv.parent_uuid, parent_uuid);
    printf("%s %llu %llu %llu %llu %llu %d %lld %s %s %lld %llu %llu\n",
           sv.ino == SUBVOLUME_ROOT_INO ? "subvolume" : "directory", (unsigned long long)sv.id,
           (unsigned long long)sv.parent, (unsigned long long)sv.dirid,
           (unsigned long long)sv.generation, (unsigned long long)sv.otransid, sv.readonly,
           sv.otime, uuid, parent_uuid, sv.size, (unsigned long long)sv.ino,
           (unsigned long long)sv.ctransid);
    return OK;
}

/* --- plain operations ------------------------------------------------------------------------ */

/* The directory holding path, opened; the last component of path copied into name. */
static int open_parent(const char *path, char *name, size_t size) {
    char copy_[4096];
    if (snprintf(copy_, sizeof copy_, "%s", path) >= (int)sizeof copy_) {
        errno = ENAMETOOLONG;
        return -1;
    }
    char *slash = strrchr(copy_, '/');
    const char *last = slash ? slash + 1 : copy_;
    if (strlen(last) >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(name, last);
    if (slash == NULL)
        return open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    *slash = '\0';
    return open(copy_[0] ? copy_ : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int make_subvolume(const char *source, const char *dest, int readonly) {
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof args);
    if (readonly)
        args.flags = BTRFS_SUBVOL_RDONLY;
    int dfd = open_parent(dest, args.name, sizeof args.name);
    if (dfd < 0)
        return fail(source ? "snapshot" : "create", dest);
    int rc = OK;
    if (source != NULL) {
        int sfd = open_dir(source);
        if (sfd < 0) {
            close(dfd);
            return fail("snapshot", source);
        }
        args.fd = sfd;
        if (ioctl(dfd, BTRFS_IOC_SNAP_CREATE_V2, &args) < 0)
            rc = fail("snapshot", dest);
        close(sfd);
    } else if (ioctl(dfd, BTRFS_IOC_SUBVOL_CREATE_V2, &args) < 0) {
        rc = fail("create", dest);
    }
    close(dfd);
    return rc;
}

/* 0 or -1 with errno. */
static int set_readonly_fd(int fd, int readonly) {
    uint64_t flags = 0;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0)
        return -1;
    uint64_t want =
        readonly ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~(uint64_t)BTRFS_SUBVOL_RDONLY);
    if (want == flags)
        return 0;
    return ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &want) < 0 ? -1 : 0;
}

static int set_readonly(const char *path, int readonly) {
    const char *op = readonly ? "readonly" : "writable";
    int fd = open_dir(path);
    if (fd < 0)
        return fail(op, path);
    int rc = set_readonly_fd(fd, readonly) < 0 ? fail(op, path) : OK;
    close(fd);
    return rc;
}

/* The descriptor stays open: the lock lasts while this process does. */
static int lock_dir(const char *path) {
    int fd = open_dir(path);
    if (fd < 0 || flock(fd, LOCK_EX) < 0)
        return fail("lock", path);
    return OK;
}

static int sync_fs(const char *path) {
    int fd = open_dir(path);
    if (fd < 0)
        return fail("sync", path);
    int rc = ioctl(fd, BTRFS_IOC_SYNC, NULL) < 0 ? fail("sync", path) : OK;
    close(fd);
    return rc;
}

static int rename2(const char *op, const char *from, const char *to, unsigned flags) {
    if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags) < 0)
        return fail(op, from);
    return OK;
}

/* --- the top level and paths below it --------------------------------------------------------- */

struct top {
    const char *path;
    int fd;
    uint64_t mnt;
};

static int mount_id(int fd, uint64_t *id) {
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) < 0)
        return -1;
    if (!(stx.stx_mask & STATX_MNT_ID)) {
        errno = ENOSYS; /* Linux before 5.8 */
        return -1;
    }
    *id = stx.stx_mnt_id;
    return 0;
}

static int open_top(const char *path, struct top *top) {
    top->path = path;
    top->fd = open_dir(path);
    if (top->fd < 0)
        return fail("open", path);
    struct subvol sv;
    if (subvol_of(top->fd, &sv) < 0 || sv.id != TOP_LEVEL_ID || sv.ino != SUBVOLUME_ROOT_INO)
        return refuse("open", path, "not the top level (subvolid=5) of a btrfs filesystem");
    if (mount_id(top->fd, &top->mnt) < 0)
        return fail("statx", path);
    return OK;
}

/* A relative path with no empty, `.` or `..` component. */
static int rel_ok(const char *rel) {
    if (rel[0] == '\0' || rel[0] == '/')
        return 0;
    const char *part = rel;
    for (;;) {
        size_t n = strcspn(part, "/");
        if (n == 0 || (n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.'))
            return 0;
        if (part[n] == '\0')
            return 1;
        part += n + 1;
    }
}

enum walk { WALK_OK, WALK_MISSING, WALK_SYMLINK, WALK_MOUNT, WALK_NOTDIR, WALK_ERROR };

/* Open TOP/REL one component at a time: never through a symlink, never across a mount. On
 * anything but WALK_OK, *stop is the length of the prefix of rel that is the problem. */
static enum walk walk_below(const struct top *top, const char *rel, int *fd_out, size_t *stop) {
    int fd = dup(top->fd);
    if (fd < 0)
        return WALK_ERROR;
    const char *part = rel;
    for (;;) {
        size_t n = strcspn(part, "/");
        char name[256];
        *stop = (size_t)(part - rel) + n;
        if (n >= sizeof name) {
            close(fd);
            errno = ENAMETOOLONG;
            return WALK_ERROR;
        }
        memcpy(name, part, n);
        name[n] = '\0';
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            int err = errno;
            close(fd);
            errno = err;
            return err == ENOENT ? WALK_MISSING : WALK_ERROR;
        }
        if (S_ISLNK(st.st_mode)) {
            close(fd);
            return WALK_SYMLINK;
        }
        int next = open_dir_at(fd, name);
        int err = errno;
        close(fd);
        if (next < 0) {
            errno = err;
            if (err == ENOTDIR)
                return WALK_NOTDIR;
            if (err == ELOOP)
                return WALK_SYMLINK;
            return err == ENOENT ? WALK_MISSING : WALK_ERROR;
        }
        uint64_t mnt;
        if (mount_id(next, &mnt) < 0) {
            err = errno;
            close(next);
            errno = err;
            return WALK_ERROR;
        }
        if (mnt != top->mnt) {
            close(next);
            return WALK_MOUNT;
        }
        fd = next;
        if (part[n] == '\0')
            break;
        part += n + 1;
    }
    *fd_out = fd;
    return WALK_OK;
}

static int check_path(const struct top *top, const char *rel) {
    int fd;
    size_t stop;
    enum walk w = walk_below(top, rel, &fd, &stop);
    if (w == WALK_OK)
        close(fd);
    if (w == WALK_OK || w == WALK_MISSING || w == WALK_NOTDIR) {
        puts("ok");
        return OK;
    }
    if (w == WALK_ERROR)
        return fail("check-path", rel);
    put_escaped(stdout, rel, stop);
    puts(w == WALK_SYMLINK ? " is a symlink" : " is a mount point");
    return OK;
}

/* --- the pin file ------------------------------------------------------------------------------ */

struct json {
    const char *p, *end;
    int depth;
};

static void json_ws(struct json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(char **o, unsigned cp) {
    char *q = *o;
    if (cp < 0x80) {
        *q++ = (char)cp;
    } else if (cp < 0x800) {
        *q++ = (char)(0xc0 | (cp >> 6));
        *q++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *q++ = (char)(0xe0 | (cp >> 12));
        *q++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *q++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *q++ = (char)(0xf0 | (cp >> 18));
        *q++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *q++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *q++ = (char)(0x80 | (cp & 0x3f));
    }
    *o = q;
}

/* A string at j->p; decoded into *out (malloc'd) when out is not NULL. 0 or -1. */
static int json_string(struct json *j, char **out) {
    if (j->p >= j->end || *j->p != '"')
        return -1;
    j->p++;
    const char *start = j->p;
    /* The decoded text is never longer than the escaped one. */
    char *buf = out ? malloc((size_t)(j->end - start) + 1) : NULL;
    char *o = buf;
    if (out && buf == NULL)
        return -1;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            if (o)
                *o++ = (char)c;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2)
            goto bad;
        char e = j->p[1];
        j->p += 2;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != '\0' && simple != NULL) {
            if (o)
                *o++ = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        if (e != 'u' || j->end - j->p < 4)
            goto bad;
        unsigned cp;
        if (hex4(j->p, &cp) < 0)
            goto bad;
        j->p += 4;
        if (cp >= 0xd800 && cp < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' &&
            j->p[1] == 'u') {
            unsigned low;
            if (hex4(j->p + 2, &low) == 0 && low >= 0xdc00 && low < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                j->p += 6;
            }
        }
        if (o)
            put_utf8(&o, cp); /* a lone surrogate comes out as its 3 bytes: it names no UUID */
    }
    if (j->p >= j->end)
        goto bad;
    j->p++;
    if (out) {
        *o = '\0';
        *out = buf;
    }
    return 0;
bad:
    free(buf);
    return -1;
}

static int json_value(struct json *j);

static int json_number(struct json *j) {
    const char *p = j->p;
    if (p < j->end && *p == '-')
        p++;
    if (p >= j->end || !isdigit((unsigned char)*p))
        return -1;
    if (*p == '0')
        p++;
    else
        while (p < j->end && isdigit((unsigned char)*p))
            p++;
    if (p < j->end && *p == '.') {
        p++;
        if (p >= j->end || !isdigit((unsigned char)*p))
            return -1;
        while (p < j->end && isdigit((unsigned char)*p))
            p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= j->end || !isdigit((unsigned char)*p))
            return -1;
        while (p < j->end && isdigit((unsigned char)*p))
            p++;
    }
    j->p = p;
    return 0;
}

static int json_literal(struct json *j, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

/* A container's members: object (keys saved when keys != NULL) or array. */
static int json_members(struct json *j, int object, char ***keys, size_t *count, size_t *cap) {
    char close = object ? '}' : ']';
    j->p++;
    if (++j->depth > JSON_DEPTH_MAX)
        return -1;
    json_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 0;
    }
    for (;;) {
        json_ws(j);
        if (object) {
            char *key = NULL;
            if (json_string(j, keys ? &key : NULL) < 0)
                return -1;
            if (keys) {
                *keys = grow(*keys, *count, cap, sizeof **keys);
                (*keys)[(*count)++] = key;
            }
            json_ws(j);
            if (j->p >= j->end || *j->p != ':')
                return -1;
            j->p++;
            json_ws(j);
        }
        /* The pin file's own members are names (strings); anything else is not a pin file. */
        if ((keys ? json_string(j, NULL) : json_value(j)) < 0)
            return -1;
        json_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return 0;
        }
        return -1;
    }
}

static int json_value(struct json *j) {
    if (j->p >= j->end)
        return -1;
    switch (*j->p) {
    case '{': return json_members(j, 1, NULL, NULL, NULL);
    case '[': return json_members(j, 0, NULL, NULL, NULL);
    case '"': return json_string(j, NULL);
    case 't': return json_literal(j, "true");
    case 'f': return json_literal(j, "false");
    case 'n': return json_literal(j, "null");
    default: return json_number(j);
    }
}

struct pins {
    char **keys;
    size_t count;
};

/* The pin file beside the old roots (dirfd): 0 (none is 0 too), or -1 with the reason in why. */
static int read_pins(int dirfd, struct pins *pins, const char **why) {
    pins->keys = NULL;
    pins->count = 0;
    int fd = openat(dirfd, PIN_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        *why = errno == ELOOP ? "is a symlink" : strerror(errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > PIN_FILE_MAX) {
        *why = !S_ISREG(st.st_mode) ? "is not a regular file" : "is larger than 16 MiB";
        close(fd);
        return -1;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t have = 0;
    if (buf == NULL) {
        close(fd);
        *why = "out of memory";
        return -1;
    }
    for (;;) {
        if (have > PIN_FILE_MAX) {
            *why = "is larger than 16 MiB";
            goto bad;
        }
        if (have == (size_t)st.st_size) { /* it may have grown: read what is there */
            char *bigger = realloc(buf, have * 2 + 4096);
            if (bigger == NULL) {
                *why = "out of memory";
                goto bad;
            }
            buf = bigger;
            st.st_size = (off_t)(have * 2 + 4095);
        }
        ssize_t got = read(fd, buf + have, (size_t)st.st_size - have);
        if (got < 0) {
            *why = strerror(errno);
            goto bad;
        }
        if (got == 0)
            break;
        have += (size_t)got;
    }
    close(fd);
    struct json j = {buf, buf + have, 0};
    size_t cap = 0;
    json_ws(&j);
    int rc = (j.p < j.end && *j.p == '{')
                 ? json_members(&j, 1, &pins->keys, &pins->count, &cap)
                 : -1;
    json_ws(&j);
    free(buf);
    if (rc < 0 || j.p != j.end) {
        *why = "is not a JSON object of names (RFC 8259, nested at most 64 deep)";
        return -1;
    }
    return 0;
bad:
    close(fd);
    free(buf);
    return -1;
}

static int by_text(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether the pins (sorted: mark_pins sorts them) name this UUID. */
static int pinned(const struct pins *pins, const uint8_t *uuid) {
    char text[37];
    const char *key = text;
    format_uuid(uuid, text);
    return pins->count > 0 &&
           bsearch(&key, pins->keys, pins->count, sizeof *pins->keys, by_text) != NULL;
}

/* --- the old-roots location ---------------------------------------------------------------------- */

struct old_root {
    struct subvol sv;
    char *name;
    int pinned;
};

struct location {
    const char *rel;
    int fd; /* -1: the location does not exist */
    struct subvol sv;
    struct old_root *roots;
    size_t count;
};

static int by_creation(const void *a, const void *b) {
    const struct old_root *x = a, *y = b;
    if (x->sv.otransid != y->sv.otransid)
        return x->sv.otransid < y->sv.otransid ? -1 : 1;
    return x->sv.id < y->sv.id ? -1 : x->sv.id > y->sv.id;
}

/* Read TOP/REL and its old roots, oldest first. */
static int open_location(const struct top *top, const char *rel, struct location *loc) {
    memset(loc, 0, sizeof *loc);
    loc->rel = rel;
    loc->fd = -1;
    size_t stop;
    switch (walk_below(top, rel, &loc->fd, &stop)) {
    case WALK_OK: break;
    case WALK_MISSING: return OK;
    case WALK_SYMLINK: return refuse("old-roots", rel, "a component is a symlink");
    case WALK_MOUNT: return refuse("old-roots", rel, "a component is a mount point");
    case WALK_NOTDIR: return refuse("old-roots", rel, "not a directory");
    case WALK_ERROR: return fail("old-roots", rel);
    }
    if (subvol_of(loc->fd, &loc->sv) < 0)
        return fail("old-roots", rel);
    DIR *dir = fdopendir(dup(loc->fd));
    if (dir == NULL)
        return fail("old-roots", rel);
    size_t cap = 0;
    struct dirent *entry;
    errno = 0;
    while ((entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        if (entry->d_type != DT_DIR && entry->d_type != DT_UNKNOWN)
            continue;
        int fd = open_dir_at(loc->fd, name);
        if (fd < 0)
            continue; /* not a directory (or gone): not an old root */
        struct subvol sv;
        uint64_t mnt;
        int ok = subvol_of(fd, &sv) == 0 && mount_id(fd, &mnt) == 0 && mnt == top->mnt &&
                 sv.ino == SUBVOLUME_ROOT_INO && sv.parent == loc->sv.id &&
                 sv.dirid == loc->sv.ino;
        close(fd);
        if (!ok)
            continue;
        loc->roots = grow(loc->roots, loc->count, &cap, sizeof *loc->roots);
        loc->roots[loc->count].sv = sv;
        loc->roots[loc->count].name = copy(name, strlen(name));
        loc->roots[loc->count].pinned = 0;
        loc->count++;
        errno = 0;
    }
    int err = errno;
    closedir(dir);
    if (err != 0) {
        errno = err;
        return fail("old-roots", rel);
    }
    qsort(loc->roots, loc->count, sizeof *loc->roots, by_creation);
    return OK;
}

/* What a command keeps open of the location: closed when it is done (`serve` runs many). */
static int close_location(struct location *loc, int rc) {
    if (loc->fd >= 0)
        close(loc->fd);
    loc->fd = -1;
    return rc;
}

static int mark_pins(struct location *loc, struct pins *pins) {
    const char *why = "";
    if (loc->fd < 0)
        return OK;
    if (read_pins(loc->fd, pins, &why) < 0) {
        fprintf(stderr, "pantheros-btrfs: the pin file ");
        put_str(stderr, loc->rel);
        fprintf(stderr, "/" PIN_FILE " %s: nothing is deleted while it cannot be read\n", why);
        return FAILED;
    }
    if (pins->count > 0)
        qsort(pins->keys, pins->count, sizeof *pins->keys, by_text);
    for (size_t i = 0; i < loc->count; i++)
        loc->roots[i].pinned = pinned(pins, loc->roots[i].sv.uuid);
    return OK;
}

static int list_old_roots(const struct top *top, const char *rel) {
    struct location loc;
    struct pins pins;
    int rc = open_location(top, rel, &loc);
    if (rc == OK)
        rc = mark_pins(&loc, &pins);
    if (rc != OK)
        return close_location(&loc, rc);
    for (size_t i = 0; i < loc.count; i++) {
        const struct old_root *r = &loc.roots[i];
        printf("%llu %llu %d %d ", (unsigned long long)r->sv.id,
               (unsigned long long)r->sv.otransid, r->sv.readonly, r->pinned);
        put_str(stdout, r->name);
        putchar('\n');
    }
    return close_location(&loc, OK);
}

static int list_pins(const struct top *top, const char *rel) {
    struct location loc;
    struct pins pins;
    int rc = open_location(top, rel, &loc);
    if (rc == OK)
        rc = mark_pins(&loc, &pins);
    if (rc != OK || loc.fd < 0)
        return close_location(&loc, rc);
    for (size_t i = 0; i < pins.count; i++) {
        put_str(stdout, pins.keys[i]);
        putchar('\n');
    }
    return close_location(&loc, OK);
}

/* Re-open an old root by name and check it is still the subvolume listed. */
static int reopen_old_root(const struct location *loc, const struct old_root *r) {
    int fd = open_dir_at(loc->fd, r->name);
    if (fd < 0)
        return -1;
    struct subvol sv;
    if (subvol_of(fd, &sv) < 0 || sv.id != r->sv.id || sv.parent != loc->sv.id ||
        sv.dirid != loc->sv.ino) {
        close(fd);
        errno = ESTALE;
        return -1;
    }
    return fd;
}

static int seal_old_roots(const struct top *top, const char *rel) {
    struct location loc;
    int rc = open_location(top, rel, &loc);
    if (rc != OK)
        return close_location(&loc, rc);
    for (size_t i = 0; i < loc.count; i++) {
        const struct old_root *r = &loc.roots[i];
        if (r->sv.readonly)
            continue;
        int fd = reopen_old_root(&loc, r);
        if (fd < 0 || set_readonly_fd(fd, 1) < 0) {
            if (fd >= 0)
                close(fd);
            fprintf(stderr, "pantheros-btrfs: cannot make old root ");
            put_str(stderr, r->name);
            fprintf(stderr, " read-only: %s\n", strerror(errno));
            return close_location(&loc, FAILED);
        }
        close(fd);
        put_str(stdout, r->name);
        putchar('\n');
    }
    return close_location(&loc, OK);
}

/* --- mounts in every mount namespace ------------------------------------------------------------ */

struct mount {
    uint64_t subvolid; /* 0: none given */
    char *root;        /* the mount's root inside the filesystem */
    char *point;
    long pid;
    int other_namespace;
};

struct mounts {
    struct mount *items;
    size_t count;
};

/* mountinfo escapes space, tab, newline and backslash as \ooo; decoded in place. */
static void unoctal(char *s) {
    char *o = s;
    while (*s) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
}

/* A mountinfo line's fields: 0 id, 1 parent, 2 major:minor, 3 root, 4 mount point, 5 options,
 * then (past the optional fields and "-") 6 fstype, 7 source, 8 super options. 0, or -1. */
static int mountinfo_fields(char *line, char *f[9]) {
    char *save = NULL;
    int n = 0, past_dash = 0;
    for (char *word = strtok_r(line, " \n", &save); word; word = strtok_r(NULL, " \n", &save)) {
        if (n < 6)
            f[n++] = word;
        else if (!past_dash)
            past_dash = strcmp(word, "-") == 0;
        else if (n < 9)
            f[n++] = word;
    }
    return n == 9 ? 0 : -1;
}

/* The id of a mount namespace's first mount (its root): mount ids are unique across
 * namespaces, so two processes whose first lines match share a mount namespace. */
static unsigned long long first_mount_id(FILE *f, char **line, size_t *cap) {
    if (getline(line, cap, f) <= 0)
        return 0;
    return strtoull(*line, NULL, 10);
}

static int device_of_mount(uint64_t mnt, char *dev, size_t size, unsigned long long *own_ns) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    int found = -1;
    *own_ns = first_mount_id(f, &line, &cap);
    do {
        char *fields[9];
        if (mountinfo_fields(line, fields) < 0)
            continue;
        if (strtoull(fields[0], NULL, 10) == mnt) {
            snprintf(dev, size, "%s", fields[2]);
            found = 0;
            break;
        }
    } while (getline(&line, &cap, f) > 0);
    free(line);
    fclose(f);
    if (found < 0)
        errno = ENOENT;
    return found;
}

struct scan {
    const char *dev;
    unsigned long long own_ns, *seen;
    size_t seen_count, seen_cap, cap;
    char *line;
    size_t line_cap;
};

/* The mounts of this filesystem in the mount namespace of process pid (path: its mountinfo),
 * unless that namespace was read already. OK, or FAILED when it cannot be read. */
static int read_namespace(struct scan *scan, const char *path, long pid, struct mounts *out) {
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        /* Gone, or exiting (a zombie has no mount namespace left: EINVAL). */
        if (errno == ENOENT || errno == ESRCH || errno == EINVAL)
            return OK;
        return fail("open", path);
    }
    unsigned long long ns = first_mount_id(f, &scan->line, &scan->line_cap);
    int known = ns == 0;
    for (size_t i = 0; i < scan->seen_count && !known; i++)
        known = scan->seen[i] == ns;
    if (known) {
        fclose(f);
        return OK;
    }
    scan->seen = grow(scan->seen, scan->seen_count, &scan->seen_cap, sizeof *scan->seen);
    scan->seen[scan->seen_count++] = ns;
    do {
        char *fields[9];
        if (mountinfo_fields(scan->line, fields) < 0)
            continue;
        if (strcmp(fields[2], scan->dev) != 0 || strcmp(fields[6], "btrfs") != 0)
            continue;
        struct mount m = {0, NULL, NULL, pid, ns != scan->own_ns};
        for (char *opt = fields[8]; *opt;) {
            size_t n = strcspn(opt, ",");
            if (n > 9 && strncmp(opt, "subvolid=", 9) == 0)
                m.subvolid = strtoull(opt + 9, NULL, 10);
            opt += n + (opt[n] == ',');
        }
        unoctal(fields[3]);
        unoctal(fields[4]);
        m.root = copy(fields[3], strlen(fields[3]));
        m.point = copy(fields[4], strlen(fields[4]));
        out->items = grow(out->items, out->count, &scan->cap, sizeof *out->items);
        out->items[out->count++] = m;
    } while (getline(&scan->line, &scan->line_cap, f) > 0);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err != 0 && err != ESRCH && err != EINVAL) {
        errno = err;
        return fail("read", path);
    }
    return OK;
}

/* Every mount of this filesystem in our mount namespace and, unless here_only, in every mount
 * namespace a process is in. */
static int read_mounts(const struct top *top, struct mounts *out, int here_only) {
    char dev[64];
    struct scan scan = {dev, 0, NULL, 0, 0, 0, NULL, 0};
    out->items = NULL;
    out->count = 0;
    if (device_of_mount(top->mnt, dev, sizeof dev, &scan.own_ns) < 0)
        return fail("read", "/proc/self/mountinfo");
    int rc = read_namespace(&scan, "/proc/self/mountinfo", (long)getpid(), out);
    if (rc != OK || here_only) {
        free(scan.seen);
        free(scan.line);
        return rc;
    }
    DIR *proc = opendir("/proc");
    if (proc == NULL)
        return fail("opendir", "/proc");
    struct dirent *entry;
    char path[64];
    ino_t *known = NULL; /* namespaces read, by their nsfs inode where it can be seen */
    size_t known_count = 0, known_cap = 0;
    while (rc == OK && (entry = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end != '\0' || pid <= 0)
            continue;
        struct stat ns;
        snprintf(path, sizeof path, "/proc/%ld/ns/mnt", pid);
        int have_ns = stat(path, &ns) == 0, seen = 0;
        for (size_t i = 0; have_ns && i < known_count && !seen; i++)
            seen = known[i] == ns.st_ino;
        if (seen)
            continue; /* most processes share a namespace: not read again */
        snprintf(path, sizeof path, "/proc/%ld/mountinfo", pid);
        rc = read_namespace(&scan, path, pid, out);
        if (have_ns) {
            known = grow(known, known_count, &known_cap, sizeof *known);
            known[known_count++] = ns.st_ino;
        }
    }
    free(known);
    closedir(proc);
    free(scan.seen);
    free(scan.line);
    return rc;
}

/* The first mount of the subvolume at fs path `path` (ids: it and those nested in it). */
static const struct mount *mounted_at(const struct mounts *mounts, const char *path,
                                      const uint64_t *ids, size_t count) {
    size_t n = strlen(path);
    for (size_t i = 0; i < mounts->count; i++) {
        const struct mount *m = &mounts->items[i];
        for (size_t k = 0; k < count; k++)
            if (m->subvolid == ids[k])
                return m;
        if (strncmp(m->root, path, n) == 0 && (m->root[n] == '\0' || m->root[n] == '/'))
            return m;
    }
    return NULL;
}

static void put_mount(FILE *out, const struct mount *m) {
    put_str(out, m->point);
    if (m->other_namespace)
        fprintf(out, " (in the mount namespace of process %ld)", m->pid);
}

/* --- nested subvolumes --------------------------------------------------------------------------- */

struct nested {
    uint64_t id, parent;
    char *path; /* below the outer subvolume's root */
    int depth;
    int holds; /* other subvolumes are nested in it */
};

struct nesting {
    struct nested *items;
    size_t count, cap;
};

/* The path of directory `dirid` inside subvolume `tree`, "" or ending in "/". */
static int dir_path(int fd, uint64_t tree, uint64_t dirid, char *out, size_t size) {
    struct btrfs_ioctl_ino_lookup_args args;
    memset(&args, 0, sizeof args);
    args.treeid = tree;
    args.objectid = dirid;
    if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) < 0)
        return -1;
    if (snprintf(out, size, "%s", args.name) >= (int)size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* Every subvolume nested in `parent` (whose path below the outer one is `prefix`), depth first. */
static int find_nested(int fd, uint64_t parent, const char *prefix, int depth,
                       struct nesting *out) {
    struct btrfs_ioctl_search_args args;
    uint64_t min_offset = 0;
    size_t first = out->count;
    for (;;) {
        memset(&args, 0, sizeof args);
        struct btrfs_ioctl_search_key *key = &args.key;
        key->tree_id = BTRFS_ROOT_TREE_OBJECTID;
        key->min_objectid = key->max_objectid = parent;
        key->min_type = key->max_type = BTRFS_ROOT_REF_KEY;
        key->min_offset = min_offset;
        key->max_offset = UINT64_MAX;
        key->max_transid = UINT64_MAX;
        key->nr_items = 4096;
        if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &args) < 0)
            return -1;
        if (key->nr_items == 0)
            break;
        size_t at = 0;
        for (uint32_t i = 0; i < key->nr_items; i++) {
            struct btrfs_ioctl_search_header header;
            memcpy(&header, args.buf + at, sizeof header);
            at += sizeof header;
            if (header.type == BTRFS_ROOT_REF_KEY && header.objectid == parent) {
                struct btrfs_root_ref ref;
                memcpy(&ref, args.buf + at, sizeof ref);
                const char *name = args.buf + at + sizeof ref;
                char dir[4096], full[8192];
                if (dir_path(fd, parent, ref.dirid, dir, sizeof dir) < 0)
                    return -1;
                snprintf(full, sizeof full, "%s%s%s%.*s", prefix, prefix[0] ? "/" : "", dir,
                         (int)ref.name_len, name);
                out->items = grow(out->items, out->count, &out->cap, sizeof *out->items);
                out->items[out->count++] =
                    (struct nested){header.offset, parent, copy(full, strlen(full)), depth, 0};
            }
            at += header.len;
            min_offset = header.offset + 1;
        }
        if (min_offset == 0)
            break;
    }
    size_t last = out->count;
    for (size_t i = first; i < last; i++) {
        size_t before = out->count;
        char *path = copy(out->items[i].path, strlen(out->items[i].path));
        if (find_nested(fd, out->items[i].id, path, depth + 1, out) < 0) {
            free(path);
            return -1;
        }
        free(path);
        out->items[i].holds = out->count > before;
    }
    return 0;
}

/* Open path below dirfd one component at a time, never through a symlink, and check the
 * subvolume found is `id`. */
static int open_subvolume(int dirfd, const char *path, uint64_t id) {
    int fd = dup(dirfd);
    const char *part = path;
    while (fd >= 0 && *part) {
        size_t n = strcspn(part, "/");
        char name[256];
        if (n == 0 || n >= sizeof name) {
            close(fd);
            errno = EINVAL;
            return -1;
        }
        memcpy(name, part, n);
        name[n] = '\0';
        int next = open_dir_at(fd, name);
        close(fd);
        fd = next;
        part += n + (part[n] == '/');
    }
    if (fd < 0)
        return -1;
    struct subvol sv;
    if (subvol_of(fd, &sv) < 0 || sv.id != id || sv.ino != SUBVOLUME_ROOT_INO) {
        close(fd);
        errno = ESTALE;
        return -1;
    }
    return fd;
}

/* Delete the subvolume `id`, found at `path` below dirfd (verified there just before). */
static int destroy(int dirfd, const char *path, uint64_t id) {
    int fd = open_subvolume(dirfd, path, id);
    if (fd < 0)
        return -1;
    close(fd);
    struct btrfs_ioctl_vol_args_v2 v2;
    memset(&v2, 0, sizeof v2);
    v2.flags = BTRFS_SUBVOL_SPEC_BY_ID;
    v2.subvolid = id;
    if (ioctl(dirfd, BTRFS_IOC_SNAP_DESTROY_V2, &v2) == 0)
        return 0;
    if (errno != ENOTTY && errno != EOPNOTSUPP)
        return -1;
    /* Linux before 5.7: by name, from the directory that holds it. */
    char holder[8192];
    snprintf(holder, sizeof holder, "%s", path);
    char *slash = strrchr(holder, '/');
    const char *name = slash ? slash + 1 : holder;
    int parent = dirfd;
    if (slash) {
        *slash = '\0';
        parent = dup(dirfd);
        for (char *part = holder; parent >= 0 && *part;) {
            size_t n = strcspn(part, "/");
            char c = part[n];
            part[n] = '\0';
            int next = open_dir_at(parent, part);
            close(parent);
            parent = next;
            part += n + (c != '\0');
        }
        if (parent < 0)
            return -1;
    }
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof args);
    size_t n = strlen(name);
    if (n >= sizeof args.name) {
        if (parent != dirfd)
            close(parent);
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(args.name, name, n);
    int rc = ioctl(parent, BTRFS_IOC_SNAP_DESTROY, &args);
    int err = errno;
    if (parent != dirfd)
        close(parent);
    errno = err;
    return rc;
}

/* Where the subvolume `id` (open as fd, at fs path "/" + dir + "/" + name, or "/" + dir when
 * name is NULL) or anything nested in it is mounted; NULL when nowhere. -1 in *rc on failure. */
static const struct mount *where_mounted(int fd, uint64_t id, const char *dir, const char *name,
                                         const struct mounts *mounts, int *rc) {
    struct nesting nesting = {NULL, 0, 0};
    *rc = 0;
    if (find_nested(fd, id, "", 1, &nesting) < 0) {
        *rc = -1;
        return NULL;
    }
    uint64_t *ids = calloc(nesting.count + 1, sizeof *ids);
    size_t size = strlen(dir) + (name ? strlen(name) : 0) + 3;
    char *path = malloc(size);
    if (ids == NULL || path == NULL) {
        perror("pantheros-btrfs");
        exit(FAILED);
    }
    ids[0] = id;
    for (size_t i = 0; i < nesting.count; i++) {
        ids[i + 1] = nesting.items[i].id;
        free(nesting.items[i].path);
    }
    snprintf(path, size, name ? "/%s/%s" : "/%s", dir, name ? name : "");
    const struct mount *m = mounted_at(mounts, path, ids, nesting.count + 1);
    free(nesting.items);
    free(ids);
    free(path);
    return m;
}

static void kept(uint64_t id, const char *fmt, const char *what) {
    printf("kept %llu ", (unsigned long long)id);
    printf(fmt, what);
    putchar('\n');
}

/* Delete one old root with everything nested in it; 0 deleted, KEPT, or FAILED. */
static int delete_one(const struct location *loc, const struct mounts *mounts,
                      const struct old_root *r) {
    uint64_t id = r->sv.id;
    if (r->pinned) {
        kept(id, "%s", "pinned");
        return KEPT;
    }
    int fd = reopen_old_root(loc, r);
    if (fd < 0) {
        kept(id, "%s", "no longer the old root it was");
        return KEPT;
    }
    int found;
    const struct mount *m = where_mounted(fd, id, loc->rel, r->name, mounts, &found);
    if (found < 0) {
        int err = errno;
        close(fd);
        kept(id, "cannot list the subvolumes nested in it: %s", strerror(err));
        return KEPT;
    }
    if (m != NULL) {
        close(fd);
        printf("kept %llu mounted at ", (unsigned long long)id);
        put_mount(stdout, m);
        putchar('\n');
        return KEPT;
    }
    struct nesting nesting = {NULL, 0, 0};
    if (find_nested(fd, id, "", 1, &nesting) < 0) {
        int err = errno;
        close(fd);
        kept(id, "cannot list the subvolumes nested in it: %s", strerror(err));
        return KEPT;
    }
    /* A read-only subvolume cannot lose a nested one: make writable exactly those that hold
     * others (each flag change costs a commit). */
    int rc = OK;
    if (nesting.count > 0 && set_readonly_fd(fd, 0) < 0) {
        kept(id, "cannot make it writable: %s", strerror(errno));
        rc = KEPT;
    }
    for (size_t i = 0; rc == OK && i < nesting.count; i++) {
        if (!nesting.items[i].holds)
            continue;
        int inner = open_subvolume(fd, nesting.items[i].path, nesting.items[i].id);
        if (inner < 0 || set_readonly_fd(inner, 0) < 0) {
            printf("kept %llu cannot make nested ", (unsigned long long)id);
            put_str(stdout, nesting.items[i].path);
            printf(" writable: %s\n", strerror(errno));
            rc = KEPT;
        }
        if (inner >= 0)
            close(inner);
    }
    /* Deepest first. */
    int deepest = 0;
    for (size_t i = 0; i < nesting.count; i++)
        if (nesting.items[i].depth > deepest)
            deepest = nesting.items[i].depth;
    for (int depth = deepest; rc == OK && depth > 0; depth--) {
        for (size_t i = nesting.count; rc == OK && i-- > 0;) {
            const struct nested *n = &nesting.items[i];
            if (n->depth != depth)
                continue;
            if (destroy(fd, n->path, n->id) < 0) {
                printf("kept %llu cannot delete nested ", (unsigned long long)id);
                put_str(stdout, n->path);
                printf(": %s\n", strerror(errno));
                rc = errno == ENOSPC ? NO_SPACE : KEPT;
                break;
            }
            printf("deleted-nested %llu ", (unsigned long long)n->id);
            put_str(stdout, n->path);
            putchar('\n');
        }
    }
    close(fd);
    if (rc == OK) {
        if (destroy(loc->fd, r->name, id) < 0) {
            rc = errno == ENOSPC ? NO_SPACE : KEPT;
            kept(id, "cannot delete it: %s", strerror(errno));
        } else {
            printf("deleted %llu ", (unsigned long long)id);
            put_str(stdout, r->name);
            putchar('\n');
        }
    }
    for (size_t i = 0; i < nesting.count; i++)
        free(nesting.items[i].path);
    free(nesting.items);
    return rc;
}

static int delete_old_roots(const struct top *top, const char *rel, char **ids, int count) {
    struct location loc;
    struct pins pins;
    struct mounts mounts;
    int rc = open_location(top, rel, &loc);
    if (rc == OK)
        rc = mark_pins(&loc, &pins);
    if (rc == OK)
        rc = read_mounts(top, &mounts, 0);
    if (rc != OK)
        return close_location(&loc, rc);
    for (int i = 0; i < count; i++) {
        char *end;
        errno = 0;
        unsigned long long id = strtoull(ids[i], &end, 10);
        if (errno != 0 || *end != '\0' || ids[i][0] == '\0' || !isdigit((unsigned char)ids[i][0]))
            return close_location(&loc, refuse("delete-old-roots", ids[i], "not a subvolume id"));
        const struct old_root *found = NULL;
        for (size_t k = 0; k < loc.count && found == NULL; k++)
            if (loc.roots[k].sv.id == id)
                found = &loc.roots[k];
        if (found == NULL) {
            kept(id, "%s", "not an old root of this location");
            rc = rc == OK ? KEPT : rc;
            continue;
        }
        int one = delete_one(&loc, &mounts, found);
        if (one == NO_SPACE || one == FAILED)
            return close_location(&loc, one);
        if (one != OK)
            rc = one;
    }
    return close_location(&loc, rc);
}

static int mounted(const struct top *top, const char *rel, int here_only) {
    int fd;
    size_t stop;
    enum walk w = walk_below(top, rel, &fd, &stop);
    if (w == WALK_MOUNT) { /* something is mounted over it (or over a directory holding it) */
        put_str(stdout, top->path);
        putchar('/');
        put_escaped(stdout, rel, stop);
        putchar('\n');
        return OK;
    }
    if (w != WALK_OK)
        return OK; /* nothing there, or not a directory: nothing of it is mounted */
    struct subvol sv;
    if (subvol_of(fd, &sv) < 0 || sv.ino != SUBVOLUME_ROOT_INO) {
        close(fd);
        return OK;
    }
    struct mounts mounts;
    int rc = read_mounts(top, &mounts, here_only);
    if (rc != OK) {
        close(fd);
        return rc;
    }
    const struct mount *m = where_mounted(fd, sv.id, rel, NULL, &mounts, &rc);
    close(fd);
    if (rc < 0)
        return fail("mounted", rel);
    if (m != NULL) {
        put_mount(stdout, m);
        putchar('\n');
    }
    return OK;
}

static int mounted_old_roots(const struct top *top, const char *rel) {
    struct location loc;
    struct mounts mounts;
    int rc = open_location(top, rel, &loc);
    if (rc == OK)
        rc = read_mounts(top, &mounts, 0);
    if (rc != OK)
        return close_location(&loc, rc);
    for (size_t i = 0; i < loc.count; i++) {
        const struct old_root *r = &loc.roots[i];
        int fd = reopen_old_root(&loc, r);
        if (fd < 0)
            continue; /* gone since it was listed */
        const struct mount *m = where_mounted(fd, r->sv.id, rel, r->name, &mounts, &rc);
        close(fd);
        if (rc < 0)
            return close_location(&loc, fail("mounted-old-roots", r->name));
        if (m != NULL) {
            printf("%llu ", (unsigned long long)r->sv.id);
            put_mount(stdout, m);
            putchar('\n');
        }
    }
    return close_location(&loc, OK);
}

/* --- records ------------------------------------------------------------------------------------ */

/* A line of the record format (pantheros.storage.keyvalue): key=value, the key [a-z][a-z0-9_]*,
 * the value printable ASCII whose backslashes are `\\` or `\xHH` (lowercase) for a byte that
 * must be escaped. */
static int record_line_ok(const char *line, size_t n) {
    size_t i = 0;
    if (n == 0 || line[0] < 'a' || line[0] > 'z')
        return 0;
    while (i < n && line[i] != '=') {
        char c = line[i++];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    if (i == n)
        return 0;
    for (i++; i < n; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c > 0x7e)
            return 0;
        if (c != '\\')
            continue;
        if (i + 1 < n && line[i + 1] == '\\') {
            i++;
            continue;
        }
        const char *digits = "0123456789abcdef";
        if (i + 3 >= n || line[i + 1] != 'x' || line[i + 2] == '\0' || line[i + 3] == '\0')
            return 0;
        const char *high = strchr(digits, line[i + 2]), *low = strchr(digits, line[i + 3]);
        if (high == NULL || low == NULL)
            return 0;
        /* One spelling per value: a printable byte is never written as an escape. */
        long byte = (high - digits) * 16 + (low - digits);
        if (byte >= 0x20 && byte <= 0x7e)
            return 0;
        i += 3;
    }
    return 1;
}

/* The record TOP/NAME (a regular file of at most 4 KiB, not followed through a link, not waited
 * on) into buf (*got bytes): OK; or FAILED with errno set (an error; ENOENT: there is none) and
 * *why NULL, or with *why saying why it is not a record a writer of the format makes. */
static int load_record(const struct top *top, const char *name, char buf[4097], ssize_t *got,
                       const char **why) {
    *why = NULL;
    *got = 0;
    int fd = openat(top->fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return FAILED;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *why = "not a regular file";
        return FAILED;
    }
    for (ssize_t more; *got < 4097; *got += more) {
        more = read(fd, buf + *got, 4097 - (size_t)*got);
        if (more < 0) {
            int err = errno;
            close(fd);
            errno = err;
            return FAILED;
        }
        if (more == 0)
            break;
    }
    close(fd);
    if (*got > 4096) {
        *why = "larger than 4096 bytes";
        return FAILED;
    }
    size_t n = (size_t)*got;
    if (n > 0 && buf[n - 1] == '\n')
        n--; /* the final newline */
    for (size_t start = 0; *got > 0;) { /* an empty file is a record with no line */
        const char *end = memchr(buf + start, '\n', n - start);
        size_t len = end ? (size_t)(end - (buf + start)) : n - start;
        if (!record_line_ok(buf + start, len)) {
            *why = "a line that is not a record's";
            return FAILED;
        }
        if (end == NULL)
            break;
        start += len + 1;
    }
    return OK;
}

/* Print the record TOP/NAME: "missing" on stderr with exit 1 when there is none; the reason,
 * exit 1, when it is not a record a writer of the format makes. */
static int read_record(const struct top *top, const char *name) {
    char buf[4097];
    ssize_t got;
    const char *why;
    if (load_record(top, name, buf, &got, &why) != OK) {
        if (why != NULL)
            return refuse("read-record", name, why);
        return errno == ENOENT ? refuse("read-record", name, "missing")
                               : fail("read-record", name);
    }
    fwrite(buf, 1, (size_t)got, stdout);
    if (got > 0 && buf[got - 1] != '\n')
        putchar('\n'); /* a request's answer ends its last line (then "= RC" follows) */
    return OK;
}

/* --- space ------------------------------------------------------------------------------------- */

static int space(const struct top *top) {
    struct btrfs_ioctl_space_args probe;
    memset(&probe, 0, sizeof probe);
    if (ioctl(top->fd, BTRFS_IOC_SPACE_INFO, &probe) < 0)
        return fail("space", top->path);
    uint64_t slots = probe.total_spaces;
    struct btrfs_ioctl_space_args *args =
        calloc(1, sizeof *args + slots * sizeof(struct btrfs_ioctl_space_info));
    if (args == NULL)
        return FAILED;
    args->space_slots = slots;
    if (ioctl(top->fd, BTRFS_IOC_SPACE_INFO, args) < 0)
        return fail("space", top->path);
    uint64_t data_used = 0, data_total = 0, meta_used = 0, meta_total = 0, other_free = 0;
    for (uint64_t i = 0; i < args->total_spaces; i++) {
        const struct btrfs_ioctl_space_info *s = &args->spaces[i];
        if (s->flags & BTRFS_SPACE_INFO_GLOBAL_RSV)
            continue;
        if (s->flags & BTRFS_BLOCK_GROUP_DATA) {
            data_used += s->used_bytes;
            data_total += s->total_bytes;
        } else if (s->flags & BTRFS_BLOCK_GROUP_METADATA) {
            meta_used += s->used_bytes;
            meta_total += s->total_bytes;
        } else {
            other_free += s->total_bytes - s->used_bytes;
        }
    }
    free(args);
    struct btrfs_ioctl_fs_info_args fs;
    memset(&fs, 0, sizeof fs);
    if (ioctl(top->fd, BTRFS_IOC_FS_INFO, &fs) < 0)
        return fail("space", top->path);
    uint64_t unallocated = 0;
    for (uint64_t devid = 0; devid <= fs.max_id; devid++) {
        struct btrfs_ioctl_dev_info_args dev;
        memset(&dev, 0, sizeof dev);
        dev.devid = devid;
        if (ioctl(top->fd, BTRFS_IOC_DEV_INFO, &dev) < 0) {
            if (errno == ENODEV)
                continue;
            return fail("space", top->path);
        }
        if (dev.total_bytes > dev.bytes_used)
            unallocated += dev.total_bytes - dev.bytes_used;
    }
    uint64_t free_bytes =
        (data_total - data_used) + (meta_total - meta_used) + other_free + unallocated;
    printf("%llu %llu %llu %llu %llu %llu\n", (unsigned long long)free_bytes,
           (unsigned long long)data_used, (unsigned long long)data_total,
           (unsigned long long)meta_used, (unsigned long long)meta_total,
           (unsigned long long)unallocated);
    return OK;
}

static unsigned long long usage_bytes;
static unsigned long usage_entries;

static int count_usage(const char *path, const struct stat *st, int type, struct FTW *where) {
    (void)path;
    (void)type;
    (void)where;
    usage_bytes += (unsigned long long)st->st_blocks * 512ULL;
    return ++usage_entries >= USAGE_ENTRIES_MAX;
}

static int usage(const char *path) {
    /* FTW_MOUNT: a nested subvolume has a device of its own, so it is not entered. */
    int rc = nftw(path, count_usage, 32, FTW_PHYS | FTW_MOUNT);
    if (rc < 0)
        return fail("usage", path);
    printf("%llu %d\n", usage_bytes, rc == 0);
    return OK;
}

/* --- changed-since: the leaves of a subvolume tree written after a transaction ---------------- */

/* Fields of on-disk items (little-endian, packed: read byte by byte). */
static uint64_t le64_at(const void *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return le64toh(v);
}
static uint32_t le32_at(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return le32toh(v);
}
static uint16_t le16_at(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return le16toh(v);
}

struct emit {
    uint64_t seen_dir;
    uint64_t *seen;
    size_t nseen, seen_cap;
};

static void put_u64(uint64_t v) { fwrite(&v, sizeof v, 1, stdout); }

static void put_name(const void *name, uint16_t len) {
    fwrite(&len, sizeof len, 1, stdout);
    fwrite(name, 1, len, stdout);
}

static void flush_seen(struct emit *e) {
    if (e->nseen == 0)
        return;
    uint32_t count = (uint32_t)e->nseen;
    putchar('S');
    put_u64(e->seen_dir);
    fwrite(&count, sizeof count, 1, stdout);
    fwrite(e->seen, sizeof *e->seen, e->nseen, stdout);
    e->nseen = 0;
}

/* One item of a changed leaf; CHANGED: the objectid of the last inode found rewritten. */
static int changed_item(struct emit *e, const struct btrfs_ioctl_search_header *h,
                        const uint8_t *data, uint64_t since, uint64_t *changed) {
    if (h->type == BTRFS_INODE_ITEM_KEY) {
        if (h->len < sizeof(struct btrfs_inode_item))
            return -1;
        const struct btrfs_inode_item *inode = (const void *)data;
        if (le64_at(&inode->transid) <= since)
            return 0;
        *changed = h->objectid;
        putchar('I');
        put_u64(h->objectid);
        put_u64(le64_at(&inode->generation));
        put_u64(le64_at(&inode->transid));
        put_u64(le64_at(&inode->size));
        put_u64(le32_at(&inode->nlink));
        put_u64(le32_at(&inode->mode));
        put_u64(le64_at(&inode->flags));
        return 0;
    }
    if (h->objectid != *changed)
        return 0;
    if (h->type == BTRFS_DIR_INDEX_KEY) {
        if (h->len < sizeof(struct btrfs_dir_item))
            return -1;
        const struct btrfs_dir_item *item = (const void *)data;
        uint16_t len = le16_at(&item->name_len);
        if (sizeof *item + len > h->len)
            return -1;
        if (e->seen_dir != h->objectid)
            flush_seen(e);
        e->seen_dir = h->objectid;
        e->seen = grow(e->seen, e->nseen + 1, &e->seen_cap, sizeof *e->seen);
        e->seen[e->nseen++] = h->offset;
        if (le64_at(&item->transid) > since) {
            uint8_t kind = item->type, subvolume = item->location.type == BTRFS_ROOT_ITEM_KEY;
            putchar('A');
            put_u64(h->objectid);
            put_u64(h->offset);
            put_u64(le64_at(&item->location.objectid));
            putchar(kind);
            putchar(subvolume);
            put_name(item + 1, len);
        }
        return 0;
    }
    if (h->type == BTRFS_INODE_REF_KEY || h->type == BTRFS_INODE_EXTREF_KEY) {
        int ext = h->type == BTRFS_INODE_EXTREF_KEY;
        size_t fixed = ext ? sizeof(struct btrfs_inode_extref) : sizeof(struct btrfs_inode_ref);
        for (uint32_t at = 0; at < h->len;) {
            if (at + fixed > h->len)
                return -1;
            uint64_t directory = h->offset, index;
            uint16_t len;
            if (ext) {
                const struct btrfs_inode_extref *ref = (const void *)(data + at);
                directory = le64_at(&ref->parent_objectid);
                index = le64_at(&ref->index);
                len = le16_at(&ref->name_len);
            } else {
                const struct btrfs_inode_ref *ref = (const void *)(data + at);
                index = le64_at(&ref->index);
                len = le16_at(&ref->name_len);
            }
            if (at + fixed + len > h->len)
                return -1;
            putchar('R');
            put_u64(h->objectid);
            put_u64(directory);
            put_u64(index);
            put_name(data + at + fixed, len);
            at += fixed + len;
        }
    }
    return 0;
}

static int changed_since(const char *path, const char *tree_arg, const char *since_arg) {
    char *end;
    errno = 0;
    unsigned long long tree = strtoull(tree_arg, &end, 10);
    if (errno || *end || end == tree_arg)
        return refuse("changed-since", tree_arg, "not a tree id");
    unsigned long long since = strtoull(since_arg, &end, 10);
    if (errno || *end || end == since_arg)
        return refuse("changed-since", since_arg, "not a transaction");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open", path);
    /* 128 KiB: the kernel faults in the whole rest of the buffer before each leaf it copies,
     * so a larger one costs more than the calls it saves (4 MiB: 0.15 s, 128 KiB: 0.12 s on
     * the diff bench's 5,700 changed leaves). */
    uint64_t size = 128 << 10;
    struct btrfs_ioctl_search_args_v2 *args = malloc(sizeof *args + size);
    if (args == NULL) {
        close(fd);
        return fail("changed-since", path);
    }
    struct btrfs_ioctl_search_key start = {
        .tree_id = tree,
        .min_objectid = BTRFS_FIRST_FREE_OBJECTID,
        .max_objectid = BTRFS_LAST_FREE_OBJECTID,
        .min_type = 0,
        .max_type = 255,
        .min_offset = 0,
        .max_offset = (uint64_t)-1,
        .min_transid = since + 1,
        .max_transid = (uint64_t)-1,
    };
    static char out[1 << 20];
    setvbuf(stdout, out, _IOFBF, sizeof out);
    struct emit e = {0};
    uint64_t changed = 0;
    int rc = OK;
    for (;;) {
        args->key = start;
        args->key.nr_items = UINT32_MAX;
        args->buf_size = size;
        if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, args) < 0) {
            if (errno == EOVERFLOW && args->buf_size > size) { /* one item larger than that */
                size = args->buf_size;
                void *bigger = realloc(args, sizeof *args + size);
                if (bigger != NULL) {
                    args = bigger;
                    continue;
                }
            }
            rc = fail("tree search", path);
            break;
        }
        uint32_t count = args->key.nr_items;
        if (count == 0)
            break;
        const uint8_t *buf = (const uint8_t *)args->buf;
        uint64_t at = 0;
        struct btrfs_ioctl_search_header h = {0};
        for (uint32_t i = 0; i < count; i++) {
            memcpy(&h, buf + at, sizeof h);
            at += sizeof h;
            if (at + h.len > args->buf_size || changed_item(&e, &h, buf + at, since, &changed)) {
                rc = refuse("changed-since", path, "a malformed item in the tree search");
                break;
            }
            at += h.len;
        }
        if (rc != OK)
            break;
        if (h.objectid == start.max_objectid && h.type == start.max_type &&
            h.offset == start.max_offset)
            break;
        /* The key after the last one read. */
        start.min_objectid = h.objectid;
        start.min_type = h.type;
        start.min_offset = h.offset + 1;
        if (h.offset == (uint64_t)-1) {
            start.min_offset = 0;
            start.min_type = h.type + 1;
            if (h.type == 255) {
                start.min_type = 0;
                start.min_objectid = h.objectid + 1;
            }
        }
    }
    flush_seen(&e);
    free(e.seen);
    free(args);
    close(fd);
    if (fflush(stdout) != 0 && rc == OK)
        rc = fail("write", "stdout");
    return rc;
}

/* --- the command line ---------------------------------------------------------------------------- */

/* COMMAND TOP REL [MORE...] */
/* --- the boot step's usual path, in one process ------------------------------------------------ */

/* --- name rules: generated from src/pantheros/data/layout.json (scripts/render-layout) --- */
#define NAME_CHARS "A-Za-z0-9@_.+-"
#define NAME_COMPONENT_MAX 200
#define NAME_MAX_LENGTH 1024
/* --- end of the generated name rules --- */

/* c is in the bracket expression's class (ranges such as A-Z; a `-` first or last is itself). */
static int in_class(const char *class, char c) {
    for (size_t i = 0; class[i] != '\0'; i++) {
        if (class[i + 1] == '-' && class[i + 2] != '\0') {
            if (c >= class[i] && c <= class[i + 2])
                return 1;
            i += 2;
        } else if (class[i] == c) {
            return 1;
        }
    }
    return 0;
}

/* A subvolume path below the top level, as the layout allows it (the boot step's name_ok). */
static int name_ok(const char *name) {
    size_t n = strlen(name), part = 0;
    if (n == 0 || n > NAME_MAX_LENGTH)
        return 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || name[i] == '/') {
            const char *p = name + i - part;
            if (part < 1 || part > NAME_COMPONENT_MAX || (part == 1 && p[0] == '.') ||
                (part == 2 && p[0] == '.' && p[1] == '.'))
                return 0;
            part = 0;
        } else if (!in_class(NAME_CHARS, name[i])) {
            return 0;
        } else {
            part++;
        }
    }
    return 1;
}

#ifdef PANTHEROS_TEST_HOOKS
/* The test variant's hooks (tests/bootstep_variant.py builds it with -DPANTHEROS_TEST_HOOKS;
 * never in what ships): killed, or hung, after a step, as the script's variant is. */
static void after_step(const char *step) {
    const char *kill_after = getenv("PANTHER_ROLLBACK_KILL_AFTER");
    const char *hang_after = getenv("PANTHER_ROLLBACK_HANG_AFTER");
    if (kill_after != NULL && strcmp(kill_after, step) == 0)
        kill(getpid(), SIGKILL);
    if (hang_after != NULL && strcmp(hang_after, step) == 0) {
        fprintf(stderr, "pantheros-rollback: hanging after %s\n", step);
        FILE *kmsg = fopen("/dev/kmsg", "w");
        if (kmsg != NULL) {
            fprintf(kmsg, "pantheros-rollback: hanging after %s\n", step);
            fclose(kmsg);
        }
        for (;;)
            pause();
    }
}
#else
static void after_step(const char *step) { (void)step; }
#endif

struct boot {
    const char *device, *top, *root, *blank, *old, *design, *keep_min, *policy, *report;
    char mounted_here[64];
    char top_real[PATH_MAX];
    struct top t;
};

/* The facts of the subvolume TOP/REL, walked as check-path walks it: 1 when it is one. */
static int subvolume_below(const struct top *top, const char *rel, struct subvol *sv, int *fd) {
    size_t stop;
    if (walk_below(top, rel, fd, &stop) != WALK_OK)
        return 0;
    if (subvol_of(*fd, sv) < 0 || sv->ino != SUBVOLUME_ROOT_INO) {
        close(*fd);
        return 0;
    }
    return 1;
}

/* Whether the subvolume (open as fd, id) at TOP/REL, or anything in it, is among the mounts of
 * this mount namespace; -1 when that cannot be told. */
static int mounted_here(const struct mounts *mounts, int fd, uint64_t id, const char *rel) {
    int rc;
    const struct mount *m = where_mounted(fd, id, rel, NULL, mounts, &rc);
    return rc < 0 ? -1 : m != NULL;
}

/* The recorded blank is this one: name, uuid and otransid as written, and an id. */
static int blank_recorded(const struct top *top, const char *name, const struct subvol *sv) {
    char buf[4097], uuid[37], otransid[24];
    ssize_t got;
    const char *why;
    if (load_record(top, ".pantheros-blank", buf, &got, &why) != OK)
        return 0;
    format_uuid(sv->uuid, uuid);
    snprintf(otransid, sizeof otransid, "%llu", (unsigned long long)sv->otransid);
    const char *wanted[] = {"name=", name, "uuid=", uuid, "otransid=", otransid};
    int found[3] = {0, 0, 0}, have_id = 0;
    size_t n = (size_t)got;
    for (size_t start = 0; start < n;) {
        const char *end = memchr(buf + start, '\n', n - start);
        size_t len = end ? (size_t)(end - (buf + start)) : n - start;
        const char *line = buf + start;
        for (int k = 0; k < 3; k++) {
            size_t key = strlen(wanted[2 * k]);
            if (len >= key && memcmp(line, wanted[2 * k], key) == 0)
                found[k] = len - key == strlen(wanted[2 * k + 1]) &&
                           memcmp(line + key, wanted[2 * k + 1], len - key) == 0;
        }
        if (len >= 3 && memcmp(line, "id=", 3) == 0)
            have_id = len > 3;
        start += len + 1;
    }
    return found[0] && found[1] && found[2] && have_id;
}

static void write_report(const struct boot *b, const char *report) {
    fputs(report, stdout);
    if (b->report == NULL || b->report[0] == '\0') /* the script's "no report file" */
        return;
    char tmp[PATH_MAX];
    int ok = snprintf(tmp, sizeof tmp, "%s.tmp", b->report) < (int)sizeof tmp;
    const char *slash = strrchr(b->report, '/');
    if (ok && slash != NULL && slash != b->report) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - b->report), b->report);
        for (char *p = dir + 1; ok && *p != '\0'; p++)
            if (*p == '/') {
                *p = '\0';
                ok = mkdir(dir, 0755) == 0 || errno == EEXIST;
                *p = '/';
            }
        ok = ok && (mkdir(dir, 0755) == 0 || errno == EEXIST);
    }
    FILE *f = ok ? fopen(tmp, "w") : NULL;
    ok = f != NULL && fputs(report, f) >= 0;
    ok = f != NULL && fclose(f) == 0 && ok && rename(tmp, b->report) == 0;
    if (!ok) {
        fputs("pantheros-rollback: could not write the report ", stderr);
        put_str(stderr, b->report);
        putc('\n', stderr);
    }
}

/* Let go of the top level: the lock with its descriptor, and the mount this process made. */
static void let_go(struct boot *b) {
    if (b->t.fd >= 0)
        close(b->t.fd);
    b->t.fd = -1;
    if (b->mounted_here[0] != '\0' &&
        (umount(b->mounted_here) < 0 || rmdir(b->mounted_here) < 0)) {
        fputs("pantheros-rollback: could not unmount ", stderr);
        put_str(stderr, b->mounted_here);
        putc('\n', stderr);
    }
    b->mounted_here[0] = '\0';
}

/* The usual boot: the previous boot's stage 2 prepared a fresh root, writable and unchanged,
 * from the recorded blank, and the root is a dirty one. Checked as the script checks it, then
 * swapped in and the previous root archived: no commit (D154). 0 when done; -1 when the script
 * is to run instead (anything else, or a step that failed: it then finds the state on disk and
 * finishes, as after a crash). */
static int boot_fast(int argc, char **argv, struct boot *b) {
    memset(b, 0, sizeof *b);
    b->t.fd = -1;
    const char *names[] = {"--device", "--top", "--root", "--blank", "--old-roots",
                           "--design", "--keep-min", "--fail-policy", "--report"};
    const char **slots[] = {&b->device, &b->top, &b->root, &b->blank, &b->old,
                            &b->design, &b->keep_min, &b->policy, &b->report};
    for (int i = 0; i < argc; i += 2) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = NULL;
        for (size_t k = 0; k < sizeof names / sizeof *names; k++)
            if (strcmp(argv[i], names[k]) == 0)
                slot = slots[k];
        if (slot == NULL || value == NULL || *slot != NULL)
            return -1; /* --dry-run, --prepare, or anything the script is to judge */
        *slot = value;
    }
    size_t digits = b->keep_min ? strspn(b->keep_min, "0123456789") : 0;
    if ((b->device == NULL) == (b->top == NULL) || b->root == NULL || b->blank == NULL ||
        b->old == NULL || b->design == NULL || strcmp(b->design, "blank-snapshot") != 0 ||
        b->policy == NULL ||
        (strcmp(b->policy, "fail-closed") != 0 && strcmp(b->policy, "boot-dirty") != 0) ||
        digits < 1 || digits > 6 || b->keep_min[digits] != '\0' || !name_ok(b->root) ||
        !name_ok(b->blank) || !name_ok(b->old))
        return -1;
    if (b->device != NULL) {
        struct stat st;
        if (stat(b->device, &st) < 0 || !S_ISBLK(st.st_mode))
            return -1;
        strcpy(b->mounted_here, "/run/pantheros-rollback.XXXXXX");
        if ((mkdir("/run", 0755) < 0 && errno != EEXIST) || mkdtemp(b->mounted_here) == NULL) {
            b->mounted_here[0] = '\0';
            return -1;
        }
        if (mount(b->device, b->mounted_here, "btrfs", 0, "subvolid=5") < 0) {
            rmdir(b->mounted_here);
            b->mounted_here[0] = '\0';
            return -1;
        }
        b->top = b->mounted_here;
    }
    if (realpath(b->top, b->top_real) == NULL)
        return -1;
    struct top *t = &b->t;
    struct subvol top_sv, blank, root, new_root;
    t->path = b->top_real;
    t->fd = open_dir(b->top_real);
    /* One rollback (or gc) at a time: the script's lock, released by exit or exec. */
    if (t->fd < 0 || subvol_of(t->fd, &top_sv) < 0 || top_sv.id != TOP_LEVEL_ID ||
        top_sv.ino != SUBVOLUME_ROOT_INO || mount_id(t->fd, &t->mnt) < 0 ||
        flock(t->fd, LOCK_EX) < 0 || ioctl(t->fd, BTRFS_IOC_SYNC, NULL) < 0)
        return -1;
    /* Invariant 7: no symlink or mount point in the old-roots location, the blank, the root's
     * directory (walk_below refuses both on the way to each). */
    const char *rels[3] = {b->old, b->blank, NULL};
    char root_dir[NAME_MAX_LENGTH + 1];
    const char *slash = strrchr(b->root, '/');
    if (slash != NULL) {
        snprintf(root_dir, sizeof root_dir, "%.*s", (int)(slash - b->root), b->root);
        rels[2] = root_dir;
    }
    int fd;
    size_t stop;
    for (int k = 0; k < 3 && rels[k] != NULL; k++) {
        enum walk w = walk_below(t, rels[k], &fd, &stop);
        if (w == WALK_OK)
            close(fd);
        if (w != WALK_OK) /* missing, not a directory, a symlink, a mount: the script's */
            return -1;
    }
    /* Invariant 9: the blank is read-only, unchanged since made, and the one recorded. */
    if (!subvolume_below(t, b->blank, &blank, &fd))
        return -1;
    close(fd);
    if (!blank.readonly || blank.ctransid > blank.otransid || !blank_recorded(t, b->blank, &blank))
        return -1;
    /* The prepared root: writable (a read-only one is the script's), unchanged since made, from
     * this blank, mounted nowhere here. */
    char new_name[NAME_MAX_LENGTH + 32];
    snprintf(new_name, sizeof new_name, "%s.pantheros-new", b->root);
    struct mounts mounts;
    if (read_mounts(t, &mounts, 1) != OK || !subvolume_below(t, new_name, &new_root, &fd))
        return -1;
    int busy = mounted_here(&mounts, fd, new_root.id, new_name);
    close(fd);
    if (busy != 0 || new_root.readonly || new_root.ctransid > new_root.otransid ||
        memcmp(new_root.parent_uuid, blank.uuid, 16) != 0)
        return -1;
    /* The root: a writable subvolume that is not fresh, mounted nowhere here (a read-only one
     * must be made writable to be moved: the script's). */
    if (!subvolume_below(t, b->root, &root, &fd))
        return -1;
    busy = mounted_here(&mounts, fd, root.id, b->root);
    close(fd);
    if (busy != 0 || root.readonly ||
        (root.ctransid <= root.otransid && memcmp(root.parent_uuid, blank.uuid, 16) == 0))
        return -1;
    /* The previous root's name among the old roots, as the script's archive names it. */
    char stamp[32], archived[64], dest[NAME_MAX_LENGTH + 80];
    time_t otime = (time_t)root.otime;
    struct tm utc;
    if (gmtime_r(&otime, &utc) == NULL ||
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc) == 0)
        return -1;
    snprintf(archived, sizeof archived, "%012llu-%s", (unsigned long long)root.otransid, stamp);
    snprintf(dest, sizeof dest, "%s/%s", b->old, archived);
    if (syscall(SYS_renameat2, t->fd, b->root, t->fd, new_name, RENAME_EXCHANGE) < 0)
        return -1;
    after_step("exchange");
    if (syscall(SYS_renameat2, t->fd, new_name, t->fd, dest, RENAME_NOREPLACE) < 0) {
        /* Taken, or no space: the script finds the roots swapped and archives the previous one
         * (under another name, pruning on a full disk). */
        fprintf(stderr, "pantheros-rollback: archiving the previous root here failed (%s): the "
                        "script finishes it\n", strerror(errno));
        return -1;
    }
    after_step("archive");
    const char *moved = strrchr(new_name, '/') ? strrchr(new_name, '/') + 1 : new_name;
    char report[4 * PATH_MAX];
    snprintf(report, sizeof report,
             "note=using the fresh root prepared for this boot\n"
             "action=exchange %s and %s (RENAME_EXCHANGE)\n"
             "action=archive %s as %s/%s\n"
             "archived=%s\n"
             "root_id=%llu\n"
             "result=fresh\n",
             b->root, new_name, moved, b->old, archived, archived,
             (unsigned long long)new_root.id);
    write_report(b, report); /* under the lock, as the script writes it */
    let_go(b);
    return 0;
}

/* `rollback ARGS...`: the boot step. Its usual path runs here; anything else, the script beside
 * this program (pantheros-rollback, the whole step) runs with the same arguments. */
static int rollback(int argc, char **argv) {
    struct boot b;
    /* As the script: a write to a closed output fails (and is said), it never kills the step. */
    signal(SIGPIPE, SIG_IGN);
    if (boot_fast(argc - 2, argv + 2, &b) == 0) {
        if (fflush(stdout) != 0)
            perror("pantheros-rollback: the report on stdout");
        return OK; /* the root is fresh: the step's outcome whatever its output became */
    }
    let_go(&b);
    char self[PATH_MAX], script[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self);
    char *dir = n > 0 && n < (ssize_t)sizeof self ? memrchr(self, '/', (size_t)n) : NULL;
    if (dir != NULL) {
        *dir = '\0';
        snprintf(script, sizeof script, "%s/pantheros-rollback", self);
        argv[1] = script;
        fflush(stdout);
        execv(script, argv + 1);
    } else {
        snprintf(script, sizeof script, "pantheros-rollback (beside /proc/self/exe)");
    }
    /* The script cannot run: no fresh root, and the policy decides the boot, as the script's
     * own failure does (fail-closed 1, boot-dirty 6). */
    const char *why = strerror(dir != NULL ? errno : ENOENT);
    char report[PATH_MAX + 256];
    snprintf(report, sizeof report, "result=dirty\nerror=cannot run %s: %s\n", script, why);
    fprintf(stderr, "pantheros-rollback: rollback failed: cannot run %s: %s\n", script, why);
    write_report(&b, report);
    return b.policy != NULL && strcmp(b.policy, "boot-dirty") == 0 ? KEPT : FAILED;
}

static int with_top(int argc, char **argv, int more) {
    const char *op = argv[1];
    if (argc < 4 || (!more && argc != 4))
        return -1;
    int rels = strcmp(op, "check-path") == 0 ? argc : 4;
    for (int i = 3; i < rels; i++)
        if (!rel_ok(argv[i]))
            return refuse(op, argv[i], "not a path below the top level");
    struct top top;
    int rc = open_top(argv[2], &top);
    if (rc != OK) {
        if (top.fd >= 0)
            close(top.fd);
        return rc;
    }
    if (strcmp(op, "check-path") == 0)
        for (int i = 3; rc == OK && i < argc; i++)
            rc = check_path(&top, argv[i]);
    else if (strcmp(op, "old-roots") == 0)
        rc = list_old_roots(&top, argv[3]);
    else if (strcmp(op, "seal-old-roots") == 0)
        rc = seal_old_roots(&top, argv[3]);
    else if (strcmp(op, "pins") == 0)
        rc = list_pins(&top, argv[3]);
    else if (strcmp(op, "mounted") == 0 || strcmp(op, "mounted-here") == 0)
        rc = mounted(&top, argv[3], strcmp(op, "mounted-here") == 0);
    else if (strcmp(op, "mounted-old-roots") == 0)
        rc = mounted_old_roots(&top, argv[3]);
    else
        rc = delete_old_roots(&top, argv[3], argv + 4, argc - 4);
    close(top.fd);
    return rc;
}

static int dispatch(int argc, char **argv) {
    const char *op = argc > 1 ? argv[1] : "";
    if (strcmp(op, "info") == 0 && argc > 2) {
        for (int i = 2; i < argc; i++) {
            int rc = info(argv[i]);
            if (rc != OK)
                return rc;
        }
        return OK;
    }
    if (strcmp(op, "name-ok") == 0 && argc > 2) {
        for (int i = 2; i < argc; i++)
            putchar(name_ok(argv[i]) ? '1' : '0');
        putchar('\n');
        return OK;
    }
    if (argc == 4 && strcmp(op, "snapshot") == 0)
        return make_subvolume(argv[2], argv[3], 0);
    if (argc == 4 && strcmp(op, "snapshot-readonly") == 0)
        return make_subvolume(argv[2], argv[3], 1);
    if (argc == 3 && strcmp(op, "create") == 0)
        return make_subvolume(NULL, argv[2], 0);
    if (argc == 4 && strcmp(op, "exchange") == 0)
        return rename2("exchange", argv[2], argv[3], RENAME_EXCHANGE);
    if (argc == 4 && strcmp(op, "rename") == 0)
        return rename2("rename", argv[2], argv[3], RENAME_NOREPLACE);
    if (argc == 3 && strcmp(op, "readonly") == 0)
        return set_readonly(argv[2], 1);
    if (argc == 3 && strcmp(op, "writable") == 0)
        return set_readonly(argv[2], 0);
    if (argc == 3 && strcmp(op, "lock") == 0)
        return lock_dir(argv[2]);
    if (argc == 3 && strcmp(op, "sync") == 0)
        return sync_fs(argv[2]);
    if (argc == 3 && strcmp(op, "usage") == 0)
        return usage(argv[2]);
    if (argc == 5 && strcmp(op, "changed-since") == 0)
        return changed_since(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(op, "read-record") == 0) {
        struct top top;
        if (strchr(argv[3], '/') != NULL || !rel_ok(argv[3]))
            return refuse(op, argv[3], "not a name at the top level");
        int rc = open_top(argv[2], &top);
        rc = rc == OK ? read_record(&top, argv[3]) : rc;
        if (top.fd >= 0)
            close(top.fd);
        return rc;
    }
    if (argc == 3 && strcmp(op, "space") == 0) {
        struct top top;
        int rc = open_top(argv[2], &top);
        rc = rc == OK ? space(&top) : rc;
        if (top.fd >= 0)
            close(top.fd);
        return rc;
    }
    const char *with_rel[] = {"old-roots", "seal-old-roots", "pins", "mounted", "mounted-here",
                              "mounted-old-roots"};
    for (size_t i = 0; i < sizeof with_rel / sizeof *with_rel; i++)
        if (strcmp(op, with_rel[i]) == 0)
            return with_top(argc, argv, 0);
    if (strcmp(op, "check-path") == 0)
        return with_top(argc, argv, 1);
    if (strcmp(op, "delete-old-roots") == 0 && argc > 4)
        return with_top(argc, argv, 1);
    return -1;
}

#define SERVE_ARGS_MAX 64

/* One argument of a request, read up to its NUL; NULL at the end of input. */
static char *next_arg(void) {
    char *arg = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&arg, &cap, '\0', stdin);
    if (n <= 0 || arg[n - 1] != '\0') {
        free(arg);
        return NULL;
    }
    return arg;
}

static int serve(void) {
    for (;;) {
        char *count_text = next_arg();
        if (count_text == NULL)
            return feof(stdin) ? OK : FAILED;
        char *end;
        long count = strtol(count_text, &end, 10);
        int bad = *end != '\0' || count < 1 || count > SERVE_ARGS_MAX;
        free(count_text);
        if (bad) {
            fprintf(stderr, "pantheros-btrfs: serve: a request that is not one\n");
            return USAGE;
        }
        char *argv[SERVE_ARGS_MAX + 2] = {"pantheros-btrfs"};
        for (long i = 1; i <= count; i++) {
            argv[i] = next_arg();
            if (argv[i] == NULL) {
                fprintf(stderr, "pantheros-btrfs: serve: a request cut short\n");
                return USAGE;
            }
        }
        argv[count + 1] = NULL;
        usage_bytes = 0;
        usage_entries = 0;
        int rc = strcmp(argv[1], "serve") == 0 ? -1 : dispatch((int)count + 1, argv);
        if (rc < 0) {
            fprintf(stderr, "pantheros-btrfs: %s: not a command with these arguments\n",
                    argv[1]);
            rc = USAGE;
        }
        for (long i = 1; i <= count; i++)
            free(argv[i]);
        printf("= %d\n", rc);
        if (fflush(stdout) != 0)
            return FAILED;
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "rollback") == 0)
        return rollback(argc, argv);
    int rc = argc == 2 && strcmp(argv[1], "serve") == 0 ? serve() : dispatch(argc, argv);
    if (rc < 0) {
        fprintf(stderr,
                "usage: pantheros-btrfs info PATH... | snapshot[-readonly] SRC DEST | "
                "create DEST | exchange A B | rename A B | readonly PATH | writable PATH | "
                "sync PATH | lock DIR | usage PATH | space TOP | name-ok NAME... | "
                "changed-since PATH TREE SINCE | "
                "rollback SCRIPT-ARGS... | "
                "read-record TOP NAME | "
                "check-path TOP REL... | "
                "old-roots|seal-old-roots|pins|mounted|mounted-here|mounted-old-roots TOP REL | "
                "delete-old-roots TOP REL ID... | serve\n");
        return USAGE;
    }
    if (fflush(stdout) != 0) {
        perror("pantheros-btrfs: stdout");
        return FAILED;
    }
    return rc;
}
