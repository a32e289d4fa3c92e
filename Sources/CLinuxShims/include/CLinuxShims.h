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

int CLinuxShims_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int CLinuxShims_pipe2(int fds[2], int flags);
int CLinuxShims_set_pdeathsig(int sig);
int CLinuxShims_wexitstatus(int status);
int CLinuxShims_wifexited(int status);

#endif
