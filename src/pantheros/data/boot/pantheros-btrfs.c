/* pantheros-btrfs: the few btrfs and rename operations the boot step cannot do with the tools
 * an initrd carries (Debian's coreutils has no `mv --exchange`; btrfs-progs prints subvolume
 * facts for people, not scripts). One operation per call, no libraries beyond libc, every
 * failure reported on stderr with a distinct exit code so the caller can react:
 *
 *   info PATH...        one line per PATH: "KIND ID PARENT DIRID GEN OTRANSID RO OTIME UUID
 *                        PARENT_UUID SIZE INO CTRANSID" where KIND is `subvolume`, or `directory` for a
 *                        plain directory (the fields then describe the subvolume holding it);
 *                        or just "missing", or "other" (a symlink, a file, not on btrfs)
 *   snapshot SRC DEST   writable snapshot of the subvolume SRC at DEST
 *   create DEST         empty subvolume at DEST
 *   exchange A B        swap A and B atomically (renameat2 RENAME_EXCHANGE)
 *   rename A B          rename A to B, never replacing B (renameat2 RENAME_NOREPLACE)
 *   readonly PATH       set the subvolume read-only; `writable PATH` clears it
 *   delete PATH         delete the subvolume PATH (it must hold no other subvolume)
 *   sync PATH           commit the filesystem's current transaction
 *   nested PATH         the subvolumes inside the subvolume PATH, deepest first, one path per
 *                        line (a name holding a newline is refused: it is never ours to delete)
 *
 * Exit codes: 0 done, 1 failed, 2 usage, 3 the name exists, 4 no space, 5 not empty.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <linux/btrfs.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#define SUBVOLUME_ROOT_INO 256
/* Read-only in the root item's flags, which GET_SUBVOL_INFO returns; the ioctl flag of
 * SUBVOL_GETFLAGS/SETFLAGS, BTRFS_SUBVOL_RDONLY, is a different bit. */
#define ROOT_SUBVOL_RDONLY (1ULL << 0)

static int fail(const char *op, const char *path) {
    int err = errno;
    fprintf(stderr, "pantheros-btrfs: %s %s: %s\n", op, path, strerror(err));
    switch (err) {
    case EEXIST: return 3;
    case ENOSPC: return 4;
    case ENOTEMPTY: return 5;
    default: return 1;
    }
}

static int open_dir(const char *path) {
    return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* The directory holding path, opened; the last component of path copied into name. */
static int open_parent(const char *path, char *name, size_t size) {
    char copy[4096];
    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy) {
        errno = ENAMETOOLONG;
        return -1;
    }
    char *slash = strrchr(copy, '/');
    const char *last = slash ? slash + 1 : copy;
    if (strlen(last) >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(name, last);
    if (slash == NULL)
        return open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    *slash = '\0';
    return open(copy[0] ? copy : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static void print_uuid(const uint8_t *uuid) {
    int zero = 1;
    for (int i = 0; i < 16; i++)
        zero &= uuid[i] == 0;
    if (zero) {
        fputs(" -", stdout);
        return;
    }
    putchar(' ');
    for (int i = 0; i < 16; i++)
        printf("%s%02x", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : "", uuid[i]);
}

static int info(const char *path) {
    int fd = open_dir(path);
    if (fd < 0) {
        if (errno == ENOENT) {
            puts("missing");
            return 0;
        }
        if (errno == ENOTDIR || errno == ELOOP) {
            puts("other");
            return 0;
        }
        return fail("info", path);
    }
    struct stat st;
    struct btrfs_ioctl_get_subvol_info_args args;
    memset(&args, 0, sizeof args);
    if (fstat(fd, &st) < 0) {
        int rc = fail("info", path);
        close(fd);
        return rc;
    }
    /* The kernel may return 1 (a search result) on success: only a negative value fails. */
    if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &args) < 0) {
        close(fd);
        puts("other");
        return 0;
    }
    close(fd);
    printf("%s %llu %llu %llu %llu %llu %d %lld",
           st.st_ino == SUBVOLUME_ROOT_INO ? "subvolume" : "directory",
           (unsigned long long)args.treeid, (unsigned long long)args.parent_id,
           (unsigned long long)args.dirid, (unsigned long long)args.generation,
           (unsigned long long)args.otransid, (args.flags & ROOT_SUBVOL_RDONLY) ? 1 : 0,
           (long long)args.otime.sec);
    print_uuid(args.uuid);
    print_uuid(args.parent_uuid);
    printf(" %lld %llu %llu\n", (long long)st.st_size, (unsigned long long)st.st_ino,
           (unsigned long long)args.ctransid);
    return 0;
}

static int make_subvolume(const char *source, const char *dest) {
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof args);
    int dfd = open_parent(dest, args.name, sizeof args.name);
    if (dfd < 0)
        return fail(source ? "snapshot" : "create", dest);
    int rc = 0;
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

static int set_readonly(const char *path, int readonly) {
    int fd = open_dir(path);
    if (fd < 0)
        return fail("readonly", path);
    uint64_t flags = 0;
    int rc = 0;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0) {
        rc = fail("readonly", path);
    } else {
        flags = readonly ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~(uint64_t)BTRFS_SUBVOL_RDONLY);
        if (ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) < 0)
            rc = fail("readonly", path);
    }
    close(fd);
    return rc;
}

static int delete_subvolume(const char *path) {
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof args);
    int dfd = open_parent(path, args.name, sizeof args.name);
    if (dfd < 0)
        return fail("delete", path);
    int rc = ioctl(dfd, BTRFS_IOC_SNAP_DESTROY, &args) < 0 ? fail("delete", path) : 0;
    close(dfd);
    return rc;
}

static int sync_fs(const char *path) {
    int fd = open_dir(path);
    if (fd < 0)
        return fail("sync", path);
    int rc = ioctl(fd, BTRFS_IOC_SYNC, NULL) < 0 ? fail("sync", path) : 0;
    close(fd);
    return rc;
}

static int visit(const char *path, const struct stat *st, int type, struct FTW *where) {
    if (where->level == 0 || type != FTW_DP || st->st_ino != SUBVOLUME_ROOT_INO)
        return 0;
    if (strchr(path, '\n') != NULL) {
        fprintf(stderr, "pantheros-btrfs: nested %s: a newline in the name\n", path);
        return 1;
    }
    return puts(path) < 0 ? 1 : 0;
}

static int nested(const char *path) {
    /* Depth first, children before their parent, never following a symlink. */
    int rc = nftw(path, visit, 32, FTW_PHYS | FTW_DEPTH);
    if (rc < 0)
        return fail("nested", path);
    return rc == 0 && fflush(stdout) == 0 ? 0 : 1;
}

static int rename2(const char *op, const char *from, const char *to, unsigned flags) {
    if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags) < 0)
        return fail(op, from);
    return 0;
}

int main(int argc, char **argv) {
    const char *op = argc > 1 ? argv[1] : "";
    if (strcmp(op, "info") == 0 && argc > 2) {
        for (int i = 2; i < argc; i++) {
            int rc = info(argv[i]);
            if (rc != 0)
                return rc;
        }
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (argc == 4 && strcmp(op, "snapshot") == 0)
        return make_subvolume(argv[2], argv[3]);
    if (argc == 3 && strcmp(op, "create") == 0)
        return make_subvolume(NULL, argv[2]);
    if (argc == 4 && strcmp(op, "exchange") == 0)
        return rename2("exchange", argv[2], argv[3], RENAME_EXCHANGE);
    if (argc == 4 && strcmp(op, "rename") == 0)
        return rename2("rename", argv[2], argv[3], RENAME_NOREPLACE);
    if (argc == 3 && strcmp(op, "readonly") == 0)
        return set_readonly(argv[2], 1);
    if (argc == 3 && strcmp(op, "writable") == 0)
        return set_readonly(argv[2], 0);
    if (argc == 3 && strcmp(op, "delete") == 0)
        return delete_subvolume(argv[2]);
    if (argc == 3 && strcmp(op, "sync") == 0)
        return sync_fs(argv[2]);
    if (argc == 3 && strcmp(op, "nested") == 0)
        return nested(argv[2]);
    fprintf(stderr, "usage: pantheros-btrfs info PATH... | snapshot SRC DEST | create DEST | "
                    "exchange A B | rename A B | readonly PATH | writable PATH | delete PATH | "
                    "sync PATH | nested PATH\n");
    return 2;
}
