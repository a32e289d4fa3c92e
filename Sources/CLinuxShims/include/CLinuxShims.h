// C shim: Linux-only headers that the Glibc module does not export, and wrappers for GNU-only calls.
// Nothing here has logic; see shims.c for why wrappers exist at all.
#ifndef CLINUXSHIMS_H
#define CLINUXSHIMS_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <signal.h>
#include <malloc.h>

int CLinuxShims_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int CLinuxShims_pipe2(int fds[2], int flags);
int CLinuxShims_set_pdeathsig(int sig);
int CLinuxShims_set_child_subreaper(void);
int CLinuxShims_wexitstatus(int status);
int CLinuxShims_wifexited(int status);
int CLinuxShims_wifsignaled(int status);
int CLinuxShims_wtermsig(int status);
/// A pidfd for `pid` (readable once it exits), or -errno. pidfd_open has no glibc wrapper before 2.36.
int CLinuxShims_pidfd_open(int pid);

/// Moves the calling thread into the network namespace `fd` refers to (setns). 0 or -1 with errno.
int CLinuxShims_join_netns(int fd);

/// fork + exec for a supervisor (kn-local): the child gets its own process group, an empty signal mask,
/// SIGKILL when the forking *thread* dies (PR_SET_PDEATHSIG), stdin from /dev/null, stdout/stderr on
/// `out_fd` (or inherited when -1) and, with `netns_fd` ≥ 0, that network namespace. Only async-signal-safe
/// calls run between fork and exec. Returns the pid, or -errno when fork failed; an exec failure shows as exit
/// status 127, a failed setns as 126.
int CLinuxShims_spawn(const char *path, char *const argv[], char *const envp[], int out_fd, int netns_fd);

#endif
