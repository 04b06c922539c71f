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
 * hands it the subdirectories it finds, open, instead of entering them itself, and the entries
 * it has just read of a large directory (one directory can hold a seventh of /usr's files).
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
    char *dents; /* NULL: read the directory fd; else entries already read from it */
    long len;
};

static const char **pruned;
static size_t npruned;
static int out_of_fds;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct task *queue;
static size_t queued, queue_cap;
static int active, waiting;

static void *grow(void *array, size_t need, size_t *cap, size_t size) {
    if (need <= *cap)
        return array;
    size_t next = *cap ? *cap : 64;
    while (next < need)
        next *= 2;
    void *bigger = realloc(array, next * size);
    if (bigger == NULL) {
        fputs("pantheros-walk: out of memory\n", stderr);
        exit(1);
    }
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

static void judge_file(struct out *o, int dirfd, const char *name, const char *path, size_t n,
                       const struct stat *st) {
    if (st->st_mode & S_IWOTH)
        put(o, 'w', path, n, NULL);
    if (st->st_mode & (S_ISUID | S_ISGID))
        put(o, 's', path, n, NULL);
    if (!(st->st_mode & 0111))
        return;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE)
            error(o, path, n, errno);
        return; /* gone, or replaced by a symlink: not this file any more */
    }
    struct stat now;
    if (fstat(fd, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino &&
        fgetxattr(fd, "security.capability", NULL, 0) >= 0)
        put(o, 'c', path, n, NULL);
    close(fd);
}

static void walk(struct out *o, int fd, const char *path);

static int others_waiting(void) { return __atomic_load_n(&waiting, __ATOMIC_RELAXED) > 0; }

/* Give a waiting thread this task (PATH copied); 0 when it could not be given. */
static int hand_over(int fd, const char *path, size_t n, char *dents, long len) {
    char *copy = strndup(path, n);
    if (copy == NULL)
        return 0;
    pthread_mutex_lock(&lock);
    queue = grow(queue, queued + 1, &queue_cap, sizeof *queue);
    queue[queued++] = (struct task){fd, copy, dents, len};
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    return 1;
}

/* Judge the directory NAME of DIRFD and enter it, or hand it, open, to a waiting thread. It is
 * opened first and judged by the descriptor's stat: what is judged is what is entered. */
static void directory(struct out *o, int dirfd, const char *name, const char *path, size_t n) {
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
        return;
    }
    if (fstat(fd, &st) != 0) {
        error(o, path, n, errno);
        close(fd);
        return;
    }
    if (!judge_dir(o, path, n, &st)) {
        close(fd);
        return;
    }
    if (others_waiting() && hand_over(fd, path, n, NULL, 0))
        return;
    walk(o, fd, path);
    close(fd);
}

/* Judge the entries DENTS (LEN bytes, as getdents64 returned them) of the directory FD. */
static void entries(struct out *o, int fd, const char *path, const char *dents, long len) {
    size_t plen = strlen(path);
    char *child = malloc(plen + 2 + 256);
    if (!child) {
        fputs("pantheros-walk: out of memory\n", stderr);
        exit(1);
    }
    memcpy(child, path, plen);
    child[plen] = '/';
    for (long at = 0; at < len;) {
        const struct linux_dirent64 *d = (const struct linux_dirent64 *)(dents + at);
        at += d->d_reclen;
        const char *name = d->d_name;
        if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
            continue;
        unsigned type = d->d_type;
        if (type != DT_DIR && type != DT_REG && type != DT_UNKNOWN)
            continue;
        size_t nlen = strlen(name);
        memcpy(child + plen + 1, name, nlen + 1);
        size_t n = plen + 1 + nlen;
        if (is_pruned(child))
            continue;
        if (type == DT_DIR) {
            directory(o, fd, name, child, n);
            continue;
        }
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT)
                error(o, child, n, errno);
            continue;
        }
        if (S_ISREG(st.st_mode))
            judge_file(o, fd, name, child, n, &st);
        else if (S_ISDIR(st.st_mode))
            directory(o, fd, name, child, n);
    }
    free(child);
}

/* Read the directory FD and judge what is in it; a full read while another thread waits is
 * handed to it, with a descriptor of its own for the directory. */
static void walk(struct out *o, int fd, const char *path) {
    char *dents = malloc(DENTS);
    if (!dents) {
        fputs("pantheros-walk: out of memory\n", stderr);
        exit(1);
    }
    for (;;) {
        long got = syscall(SYS_getdents64, fd, dents, DENTS);
        if (got < 0) {
            error(o, path, strlen(path), errno);
            break;
        }
        if (got == 0)
            break;
        if (got > DENTS / 2 && others_waiting()) {
            int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
            if (copy >= 0) {
                if (hand_over(copy, path, strlen(path), dents, got)) {
                    dents = malloc(DENTS);
                    if (!dents) {
                        fputs("pantheros-walk: out of memory\n", stderr);
                        exit(1);
                    }
                    continue;
                }
                close(copy);
            } else if (errno == EMFILE || errno == ENFILE) {
                error(o, path, strlen(path), errno);
            }
        }
        entries(o, fd, path, dents, got);
    }
    free(dents);
}

static struct out outs[MAX_THREADS];

static void *worker(void *arg) {
    struct out *o = arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        if (queued > 0) {
            struct task t = queue[--queued];
            active++;
            pthread_mutex_unlock(&lock);
            if (t.dents)
                entries(o, t.fd, t.path, t.dents, t.len);
            else
                walk(o, t.fd, t.path);
            close(t.fd);
            free(t.dents);
            free(t.path);
            pthread_mutex_lock(&lock);
            active--;
            continue;
        }
        if (active == 0)
            break;
        waiting++;
        pthread_cond_wait(&wake, &lock);
        waiting--;
    }
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int usage(void) {
    fputs("usage: pantheros-walk [-j THREADS] [-p PRUNED]... TOP...\n", stderr);
    return 2;
}

int main(int argc, char **argv) {
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
