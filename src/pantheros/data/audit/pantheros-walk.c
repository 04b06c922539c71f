/* pantheros-walk: the audit's file inventory (pantheros.audit.inventory) in one pass over the
 * system directories, shared among threads. Libc only; not part of the boot step.
 *
 *   pantheros-walk [-j THREADS] [-p PRUNED]... TOP...
 *
 * Prints one record per finding, each "KIND PATH" ended by a NUL byte, PATH as walked (TOP and
 * the names below it):
 *   s  a regular file with the setuid or setgid bit
 *   c  an executable regular file with a security.capability attribute
 *   w  a regular file others may write, or a directory others may write without the sticky bit
 *   e  what could not be read, and why (PATH is then the message)
 *
 * The rules are the module's, stated there with their reasons: a PRUNED path (an exact path as
 * walked: a mount point, the store) is neither judged nor entered; a directory owned by root
 * that neither its group nor others may search is not entered; only directories and regular
 * files are judged, told by the directory entry's type and confirmed by a stat relative to the
 * directory read; symlinks are never followed (every open is relative to an open directory,
 * with O_NOFOLLOW); the capability attribute is read from the executable itself, opened there.
 *
 * Every directory is read by whichever thread reaches it; a thread that sees another waiting
 * (and no task queued for it yet) hands it the later half of the entries not yet judged of the
 * outermost directory it holds that has two or more, with a duplicate of its descriptor
 * (share()): a large part of what it has left, so that threads seldom wait (about 60 waits in
 * a walk of /, where handing over each directory as it was found made a thousand).
 *
 * The walk is iterative: a thread keeps one path buffer and a stack of open directories, each
 * with the part of its entries not yet judged (read 4 KiB at a time below DEEP levels), so
 * neither memory nor the C stack grows with the square of the depth; one descriptor per level
 * is the limit (exit 3). A name of any length the filesystem gives is taken (FUSE allows 1024
 * bytes). The capability attribute is read without opening the file for reading
 * (getxattrat, or an O_PATH descriptor), so no lease or mode of the file's owner hides it; an
 * attribute that cannot be read for another reason is an error record, never a silent pass.
 *
 * Exit status: 0 when the walk is complete (errors are reported as `e` records and leave it
 * complete in what could be read), 3 when it ran out of file descriptors (a tree deeper than
 * the limit: the caller walks another way), 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MAX_THREADS 16
#define DENTS (32 * 1024)
#define DENTS_DEEP 4096 /* the read size below DEEP levels: memory per level stays small */
#define DEEP 32
#ifndef SYS_getxattrat
#define SYS_getxattrat 464 /* the same number on every architecture (Linux 6.13) */
#endif
#ifndef SYS_close_range
#define SYS_close_range 436 /* the same number on every architecture (Linux 5.9) */
#endif

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

struct out {
    char *data;
    size_t len, cap;
};

struct task {
    int fd;
    char *path;
    char *dents; /* NULL: read the directory fd; else entries already read from it (fd is a
                    duplicate, never read from: its offset is the original reader's) */
    long len;
};

/* A directory being walked: its descriptor and the entries of it not yet judged. */
struct frame {
    int fd;
    char *dents;
    long len, at;
    size_t plen; /* its path's length in the thread's path buffer */
    int batch;   /* a batch handed over: its entries are all there is to judge here */
};

struct walker {
    struct out *o;
    char *path;
    size_t cap;
    struct frame *stack;
    size_t depth, stack_cap;
    char *scratch;
};

static const char **pruned;
static size_t npruned;
static int out_of_fds;
#ifdef PANTHEROS_NO_GETXATTRAT /* the tests' variant: the way kernels before 6.13 are read */
static int no_getxattrat = 1;
#else
static int no_getxattrat;
#endif

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct task *queue;
static size_t queued, queue_cap;
static int active, waiting;

static void no_memory(void) {
    fputs("pantheros-walk: out of memory\n", stderr);
    exit(1);
}

static void *grow(void *array, size_t need, size_t *cap, size_t size) {
    if (need <= *cap)
        return array;
    size_t next = *cap ? *cap : 64;
    while (next < need)
        next *= 2;
    void *bigger = realloc(array, next * size);
    if (bigger == NULL)
        no_memory();
    *cap = next;
    return bigger;
}

static void put(struct out *o, char kind, const char *path, size_t n, const char *why) {
    size_t extra = why ? 2 + strlen(why) : 0;
    o->data = grow(o->data, o->len + n + extra + 3, &o->cap, 1);
    o->data[o->len++] = kind;
    o->data[o->len++] = ' ';
    memcpy(o->data + o->len, path, n);
    o->len += n;
    if (why) {
        memcpy(o->data + o->len, ": ", 2);
        memcpy(o->data + o->len + 2, why, extra - 2);
        o->len += extra;
    }
    o->data[o->len++] = '\0';
}

static void error(struct out *o, const char *path, size_t n, int err) {
    if (err == EMFILE || err == ENFILE)
        __atomic_store_n(&out_of_fds, 1, __ATOMIC_RELAXED);
    put(o, 'e', path, n, strerror(err));
}

static int by_text(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int is_pruned(const char *path) {
    return npruned && bsearch(&path, pruned, npruned, sizeof *pruned, by_text) != NULL;
}

/* Note a directory that is a finding; whether the walk enters it. */
static int judge_dir(struct out *o, const char *path, size_t n, const struct stat *st) {
    if (st->st_uid == 0 && !(st->st_mode & 011))
        return 0;
    if ((st->st_mode & S_IWOTH) && !(st->st_mode & S_ISVTX))
        put(o, 'w', path, n, NULL);
    return 1;
}

/* Whether an attribute that could not be read is simply not there (or the file is gone). */
static int absent(int err) { return err == ENODATA || err == ENOTSUP || err == ENOENT; }

/* 1 when the regular file NAME of DIRFD (its stat: ST) has a capability attribute, 0 when
 * not, -1 (errno set) when that cannot be told. */
static int capability(int dirfd, const char *name, const char *path, const struct stat *st) {
    if (!__atomic_load_n(&no_getxattrat, __ATOMIC_RELAXED)) {
        struct {
            uint64_t value;
            uint32_t size, flags;
        } args = {0, 0, 0};
        if (syscall(SYS_getxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, "security.capability",
                    &args, sizeof args) >= 0)
            return 1;
        if (errno != ENOSYS)
            return absent(errno) ? 0 : -1;
        __atomic_store_n(&no_getxattrat, 1, __ATOMIC_RELAXED);
    }
    /* An O_PATH descriptor: no read access needed, no lease or open of the file's owner
     * involved; the attribute then read through /proc, or by path where /proc is not. */
    int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return absent(errno) ? 0 : -1;
    struct stat now;
    int found = 0;
    if (fstat(fd, &now) != 0) {
        found = -1;
    } else if (now.st_dev == st->st_dev && now.st_ino == st->st_ino) {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        ssize_t got = getxattr(proc, "security.capability", NULL, 0);
        if (got < 0 && errno == ENOENT && access("/proc/self/fd", F_OK) != 0)
            got = lgetxattr(path, "security.capability", NULL, 0);
        found = got >= 0 ? 1 : absent(errno) ? 0 : -1;
    } /* else replaced since its stat: not this file any more */
    int err = errno;
    close(fd);
    errno = err;
    return found;
}

static void judge_file(struct out *o, int dirfd, const char *name, const char *path, size_t n,
                       const struct stat *st) {
    if (st->st_mode & S_IWOTH)
        put(o, 'w', path, n, NULL);
    if (st->st_mode & (S_ISUID | S_ISGID))
        put(o, 's', path, n, NULL);
    if (!(st->st_mode & 0111))
        return;
    int has = capability(dirfd, name, path, st);
    if (has > 0)
        put(o, 'c', path, n, NULL);
    else if (has < 0)
        error(o, path, n, errno);
}

/* The directory NAME of DIRFD, opened and judged by the descriptor's stat (what is judged is
 * what is entered): its descriptor to enter, or -1. */
static int directory(struct out *o, int dirfd, const char *name, const char *path, size_t n) {
    struct stat st;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT)
                error(o, path, n, errno);
        } else if (S_ISREG(st.st_mode)) {
            judge_file(o, dirfd, name, path, n, &st); /* replaced since it was listed */
        } else if (S_ISDIR(st.st_mode) && judge_dir(o, path, n, &st)) {
            error(o, path, n, err);
        }
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        error(o, path, n, errno);
        close(fd);
        return -1;
    }
    if (!judge_dir(o, path, n, &st)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void push(struct walker *w, int fd, size_t plen, char *dents, long len, int batch) {
    w->stack = grow(w->stack, w->depth + 1, &w->stack_cap, sizeof *w->stack);
    w->stack[w->depth++] = (struct frame){fd, dents, len, 0, plen, batch};
}

/* The path buffer holds PATH/NAME from PLEN on: its length. */
static size_t child_path(struct walker *w, size_t plen, const char *name) {
    size_t nlen = strlen(name);
    int slash = plen == 0 || w->path[plen - 1] != '/';
    w->path = grow(w->path, plen + slash + nlen + 1, &w->cap, 1);
    if (slash)
        w->path[plen] = '/';
    memcpy(w->path + plen + slash, name, nlen + 1);
    return plen + slash + nlen;
}

/* Fill the frame on top with its next entries; 0 when the directory is done. */
static int refill(struct walker *w) {
    struct frame *f = &w->stack[w->depth - 1];
    free(f->dents);
    f->dents = NULL;
    if (f->batch)
        return 0;
    size_t size = w->depth > DEEP ? DENTS_DEEP : DENTS;
    long got = syscall(SYS_getdents64, f->fd, w->scratch, size);
    if (got < 0) {
        if (errno != ENOENT) /* removed since it was opened: gone, as elsewhere */
            error(w->o, w->path, f->plen, errno);
        return 0;
    }
    if (got == 0)
        return 0;
    f->dents = malloc(got);
    if (f->dents == NULL)
        no_memory();
    memcpy(f->dents, w->scratch, got);
    f->len = got;
    f->at = 0;
    return 1;
}

/* To each thread that waits with nothing queued for it: the later half of the entries not yet
 * judged of the outermost directory on the stack that has two or more (the directory stays this
 * thread's to read on). Half, not all: a thread given everything that is left would give it
 * all on again at its next entry when others wait, one entry of progress per handing over. */
static void share(struct walker *w) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; queued < (size_t)waiting && i < w->depth; i++) {
        struct frame *f = &w->stack[i];
        if (f->dents == NULL)
            continue;
        long half = f->at + (f->len - f->at) / 2, cut = f->at;
        while (cut < half) /* the first entry that starts at or past the middle */
            cut += ((const struct linux_dirent64 *)(f->dents + cut))->d_reclen;
        if (cut <= f->at || cut >= f->len)
            continue; /* fewer than two entries left here */
        int twin = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
        if (twin < 0) {
            if (errno == EMFILE || errno == ENFILE)
                error(w->o, w->path, f->plen, errno);
            break;
        }
        long rest = f->len - cut;
        char *dents = malloc(rest);
        char *path = strndup(w->path, f->plen);
        if (dents == NULL || path == NULL)
            no_memory();
        memcpy(dents, f->dents + cut, rest);
        f->len = cut;
        queue = grow(queue, queued + 1, &queue_cap, sizeof *queue);
        queue[queued++] = (struct task){twin, path, dents, rest};
        pthread_cond_signal(&wake);
    }
    pthread_mutex_unlock(&lock);
}

/* Walk the task: the directory T.FD (and below it), or the batch of its entries T.DENTS. */
static void walk(struct walker *w, struct task t) {
    size_t plen = strlen(t.path);
    w->path = grow(w->path, plen + 1, &w->cap, 1);
    memcpy(w->path, t.path, plen + 1);
    push(w, t.fd, plen, t.dents, t.len, t.dents != NULL);
    while (w->depth > 0) {
        if (__atomic_load_n(&waiting, __ATOMIC_RELAXED) > 0)
            share(w);
        struct frame *f = &w->stack[w->depth - 1];
        if (f->dents == NULL || f->at >= f->len) {
            if (!refill(w)) {
                close(f->fd);
                w->depth--;
            }
            continue;
        }
        const struct linux_dirent64 *d = (const struct linux_dirent64 *)(f->dents + f->at);
        f->at += d->d_reclen;
        const char *name = d->d_name;
        if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
            continue;
        unsigned type = d->d_type;
        if (type != DT_DIR && type != DT_REG && type != DT_UNKNOWN)
            continue;
        int dirfd = f->fd;
        size_t dirlen = f->plen;
        size_t n = child_path(w, dirlen, name);
        if (is_pruned(w->path))
            continue;
        int isdir = type == DT_DIR;
        if (!isdir) {
            struct stat st;
            if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno != ENOENT)
                    error(w->o, w->path, n, errno);
                continue;
            }
            if (S_ISREG(st.st_mode))
                judge_file(w->o, dirfd, name, w->path, n, &st);
            isdir = S_ISDIR(st.st_mode);
        }
        if (!isdir)
            continue;
        int fd = directory(w->o, dirfd, name, w->path, n);
        if (fd < 0)
            continue;
        push(w, fd, n, NULL, 0, 0); /* f is stale from here: the stack may have moved */
    }
    free(t.path);
}

static struct out outs[MAX_THREADS];

static void *worker(void *arg) {
    struct walker w = {.o = arg};
    w.scratch = malloc(DENTS);
    if (w.scratch == NULL)
        no_memory();
    pthread_mutex_lock(&lock);
    for (;;) {
        if (queued > 0) {
            struct task t = queue[--queued];
            active++;
            pthread_mutex_unlock(&lock);
            walk(&w, t);
            pthread_mutex_lock(&lock);
            active--;
            continue;
        }
        if (active == 0)
            break;
        __atomic_add_fetch(&waiting, 1, __ATOMIC_RELAXED);
        pthread_cond_wait(&wake, &lock);
        __atomic_sub_fetch(&waiting, 1, __ATOMIC_RELAXED);
    }
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    free(w.scratch);
    free(w.path);
    free(w.stack);
    return NULL;
}

static int usage(void) {
    fputs("usage: pantheros-walk [-j THREADS] [-p PRUNED]... TOP...\n", stderr);
    return 2;
}

/* Only what it opens itself: a spawn passes on every descriptor its parent left inheritable
 * (posix_spawn closes none), and one of those held by a walker would outlive panther. */
static void close_inherited(void) {
    if (syscall(SYS_close_range, 3, ~0U, 0) == 0)
        return;
    struct rlimit fds; /* kernels before 5.9 */
    long top = getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < 65536 ? (long)fds.rlim_cur
                                                                            : 65536;
    for (long fd = 3; fd < top; fd++)
        close((int)fd);
}

int main(int argc, char **argv) {
    close_inherited();
    int threads = 1, i = 1;
    pruned = calloc(argc, sizeof *pruned);
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "-j") == 0) {
            char *end;
            long j = strtol(argv[++i], &end, 10);
            if (*end || j < 1 || j > MAX_THREADS)
                return usage();
            threads = (int)j;
        } else if (strcmp(argv[i], "-p") == 0) {
            pruned[npruned++] = argv[++i];
        } else {
            return usage();
        }
    }
    if (i >= argc)
        return usage();
    qsort(pruned, npruned, sizeof *pruned, by_text);
    /* One descriptor per level of the deepest path being walked: as many as allowed. */
    struct rlimit fds;
    if (getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
        fds.rlim_cur = fds.rlim_max;
        setrlimit(RLIMIT_NOFILE, &fds);
    }

    struct out *o = &outs[0];
    for (; i < argc; i++) {
        const char *top = argv[i];
        size_t n = strlen(top);
        struct stat st;
        if (is_pruned(top))
            continue;
        if (fstatat(AT_FDCWD, top, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            error(o, top, n, errno);
            continue;
        }
        if (S_ISREG(st.st_mode)) {
            judge_file(o, AT_FDCWD, top, top, n, &st);
            continue;
        }
        if (!S_ISDIR(st.st_mode) || !judge_dir(o, top, n, &st))
            continue;
        int fd = open(top, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            error(o, top, n, errno);
            continue;
        }
        char *copy = strdup(top);
        queue = grow(queue, queued + 1, &queue_cap, sizeof *queue);
        queue[queued++] = (struct task){fd, copy, NULL, 0};
    }
    pthread_t ids[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++)
        if (pthread_create(&ids[started], NULL, worker, &outs[t]) == 0)
            started++;
    worker(&outs[0]);
    for (int t = 0; t < started; t++)
        pthread_join(ids[t], NULL);
    for (int t = 0; t < MAX_THREADS; t++)
        if (outs[t].len && fwrite(outs[t].data, 1, outs[t].len, stdout) != outs[t].len)
            break;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("pantheros-walk: stdout");
        return 1;
    }
    return out_of_fds ? 3 : 0;
}
