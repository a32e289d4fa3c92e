// Wrappers compiled with _GNU_SOURCE: accept4/pipe2 are invisible to Swift through the Glibc module
// (TOOLCHAIN.md §2), so they are re-exported under prefixed names.
#include "CLinuxShims.h"
#include <unistd.h>
#include <sys/wait.h>

_Static_assert(sizeof(struct epoll_event) == 12, "epoll_event is packed on x86_64; Swift relies on stride 12");

int CLinuxShims_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int CLinuxShims_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

int CLinuxShims_set_pdeathsig(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

int CLinuxShims_wexitstatus(int status) { return WEXITSTATUS(status); }

int CLinuxShims_wifexited(int status) { return WIFEXITED(status); }
