// Wrappers compiled with _GNU_SOURCE: accept4/pipe2 are invisible to Swift through the Glibc module
// (TOOLCHAIN.md §2), so they are re-exported under prefixed names.
#include "CLinuxShims.h"
#include <unistd.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>

_Static_assert(sizeof(struct epoll_event) == 12, "epoll_event is packed on x86_64; Swift relies on stride 12");

int CLinuxShims_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int CLinuxShims_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

int CLinuxShims_set_pdeathsig(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

int CLinuxShims_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

int CLinuxShims_join_netns(int fd) { return setns(fd, CLONE_NEWNET); }

int CLinuxShims_wexitstatus(int status) { return WEXITSTATUS(status); }

int CLinuxShims_wifexited(int status) { return WIFEXITED(status); }

int CLinuxShims_wifsignaled(int status) { return WIFSIGNALED(status); }

int CLinuxShims_wtermsig(int status) { return WTERMSIG(status); }

int CLinuxShims_pidfd_open(int pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : (int)fd;
}

// Logic in C on purpose: after fork() in a multithreaded process only async-signal-safe calls are allowed,
// and Swift code (allocation, retain/release, locks) is not.
int CLinuxShims_spawn(const char *path, char *const argv[], char *const envp[], int out_fd, int netns_fd) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid > 0) return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != parent) _exit(127); // the parent died before prctl took effect
    setpgid(0, 0);                       // the terminal's Ctrl-C goes to the supervisor only
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) { dup2(devnull, 0); if (devnull > 2) close(devnull); }
    if (out_fd >= 0) { dup2(out_fd, 1); dup2(out_fd, 2); if (out_fd > 2) close(out_fd); }
    // A pod's own network namespace (kn-local's namespace mode); the descriptor is close-on-exec.
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) _exit(126);
    execve(path, argv, envp);
    _exit(127);
}
