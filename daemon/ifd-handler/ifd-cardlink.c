/*
 * cardlink IFD handler: a pcsc-lite reader driver (IFD Handler API v3) whose
 * cards are served by the cardlink daemon over a Unix socket.
 *
 * reader.conf:   DEVICENAME <socket path>[:slots=N][:uid=U]
 *
 * The handler LISTENS on the socket. One bridge client at a time; only root
 * or uid U may connect (checked with SO_PEERCRED), because whoever can write
 * to the socket can insert a card. The wire protocol is in bridge-protocol.h
 * and docs/reader-bridge.md.
 *
 * Threads: pcscd calls the IFDH* functions from its own threads; one I/O
 * thread per reader accepts the client and reads its messages. All reader
 * state, and every use of the client socket, is under the reader's mutex; a
 * transmit sends the APDU and waits on the condition variable for the
 * RESPONSE, the REMOVE of its card, or the end of the connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ifdhandler.h>
#include <reader.h>

#include "bridge-protocol.h"

#define CL_EXPORT __attribute__((visibility("default")))

/** Readers one pcscd can run with this driver (Lun high 16 bits). */
#define CL_MAX_READERS 4
/** Slots per reader; pcscd itself has at most 16 reader contexts in all. */
#define CL_MAX_SLOTS 16
/** Slots when DEVICENAME has no slots= option. */
#define CL_DEFAULT_SLOTS 4
/** Longest DEVICENAME accepted. */
#define CL_MAX_DEVICENAME 512
/** How long a transmit waits for the RESPONSE before the client is dropped. */
#define CL_TRANSMIT_TIMEOUT_MS 30000
/** How long a connected client may take to send HELLO. */
#define CL_HELLO_TIMEOUT_MS 5000
/** Send timeout on the client socket (SO_SNDTIMEO): a client that stops reading is dropped. */
#define CL_SEND_TIMEOUT_MS 5000
/** listen() backlog. */
#define CL_LISTEN_BACKLOG 4
/** Mode of a directory the handler creates for the socket. */
#define CL_SOCKET_DIR_MODE 0755
/** Mode of the socket file. */
#define CL_SOCKET_MODE 0600

/* SCARD_PROTOCOL_T0 / T1 (pcsclite.h). */
#define CL_PROTOCOL_T0 0x0001
#define CL_PROTOCOL_T1 0x0002

/* ---- logging: pcscd's log_msg when loaded by pcscd, stderr otherwise ---- */

enum { CL_LOG_DEBUG = 0, CL_LOG_INFO = 1, CL_LOG_ERROR = 2, CL_LOG_CRITICAL = 3 };

extern void log_msg(const int priority, const char *fmt, ...) __attribute__((weak));

static void cl_log(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cl_log(int priority, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (log_msg)
		log_msg(priority, "ifd-cardlink: %s", line);
	else if (priority >= CL_LOG_INFO)
		(void)fprintf(stderr, "ifd-cardlink: %s\n", line);
}

/* ---- state ---- */

struct cl_slot {
	int channel_open;
	int present;
	int powered;
	unsigned char atr[CL_MAX_ATR];
	size_t atr_len;
	/* Bumped at every insert and remove; lets the polling thread and a
	 * waiting transmit notice a change, even a remove + insert. */
	unsigned long card_gen;
	/* What IFDHICCPresence last told pcscd. */
	unsigned long reported_gen;
	int reported_present;
	int stop_polling;
	/* The transmit waiting for a RESPONSE, if any. */
	int waiting;
	int response_ready;
	int response_overflow;
	unsigned char *rx_buf;
	size_t rx_cap;
	size_t rx_len;
};

struct cl_reader {
	int in_use;
	char device[CL_MAX_DEVICENAME];
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	unsigned slots;
	int uid_set;
	uid_t uid;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	int listen_fd;
	int client_fd;
	int hello_done;
	struct timespec hello_deadline;
	unsigned long conn_gen; /* bumped at every connect and disconnect */
	unsigned char *rx;      /* CL_LENGTH_PREFIX + CL_MAX_LENGTH bytes */
	size_t rx_have;

	int wake[2]; /* pipe: wakes the I/O thread */
	int stopping;
	pthread_t io_thread;

	struct cl_slot slot[CL_MAX_SLOTS];
};

static struct cl_reader readers[CL_MAX_READERS];
/* Guards the creation and destruction of readers. */
static pthread_mutex_t readers_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- helpers ---- */

static void deadline_after(struct timespec *ts, long ms)
{
	(void)clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec += 1;
		ts->tv_nsec -= 1000000000L;
	}
}

static long ms_until(const struct timespec *deadline)
{
	struct timespec now;
	long ms;

	(void)clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long)(deadline->tv_sec - now.tv_sec) * 1000L + (deadline->tv_nsec - now.tv_nsec) / 1000000L;
	return ms < 0 ? 0 : ms + 1;
}

static struct cl_reader *reader_of(DWORD Lun)
{
	unsigned long idx = (unsigned long)Lun >> 16;

	if (idx >= CL_MAX_READERS || !readers[idx].in_use)
		return NULL;
	return &readers[idx];
}

static struct cl_slot *slot_of(struct cl_reader *r, DWORD Lun)
{
	unsigned long idx = (unsigned long)Lun & 0xFFFFUL;

	if (idx >= r->slots || !r->slot[idx].channel_open)
		return NULL;
	return &r->slot[idx];
}

static void wake_io_thread(struct cl_reader *r)
{
	const char b = 1;
	ssize_t n;

	do
		n = write(r->wake[1], &b, 1);
	while (n < 0 && errno == EINTR);
	/* EAGAIN: the pipe is full, the thread is woken anyway. */
}

/* Sends one message in one sendmsg() call (looping only on a short write). */
static int send_msg_locked(struct cl_reader *r, unsigned char type, unsigned char slot, const unsigned char *payload,
			   size_t len)
{
	unsigned char head[CL_LENGTH_PREFIX + CL_HEADER_AFTER_LENGTH];
	uint32_t total = (uint32_t)(len + CL_HEADER_AFTER_LENGTH);
	struct iovec iov[2];
	struct msghdr mh;
	size_t left = sizeof head + len;

	if (r->client_fd < 0 || len > CL_MAX_PAYLOAD)
		return -1;
	head[0] = (unsigned char)(total >> 24);
	head[1] = (unsigned char)(total >> 16);
	head[2] = (unsigned char)(total >> 8);
	head[3] = (unsigned char)total;
	head[4] = type;
	head[5] = slot;
	iov[0].iov_base = head;
	iov[0].iov_len = sizeof head;
	iov[1].iov_base = (void *)(uintptr_t)payload; /* sendmsg does not write it */
	iov[1].iov_len = len;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = iov;
	mh.msg_iovlen = len ? 2 : 1;
	while (left > 0) {
		ssize_t n = sendmsg(r->client_fd, &mh, MSG_NOSIGNAL);
		size_t done;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done = (size_t)n;
		left -= done;
		while (done > 0 && mh.msg_iovlen > 0) {
			if (done >= mh.msg_iov[0].iov_len) {
				done -= mh.msg_iov[0].iov_len;
				mh.msg_iov++;
				mh.msg_iovlen--;
			} else {
				mh.msg_iov[0].iov_base = (unsigned char *)mh.msg_iov[0].iov_base + done;
				mh.msg_iov[0].iov_len -= done;
				done = 0;
			}
		}
	}
	return 0;
}

/* Closes the client connection: every slot becomes absent, waiters wake. */
static void drop_client_locked(struct cl_reader *r, unsigned char reason, const char *why)
{
	unsigned i;

	if (r->client_fd < 0)
		return;
	if (reason) {
		unsigned char bye[CL_LENGTH_PREFIX + CL_HEADER_AFTER_LENGTH + 1] = {0, 0, 0, 3, CL_MSG_GOODBYE, 0, reason};

		(void)send(r->client_fd, bye, sizeof bye, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	(void)close(r->client_fd);
	r->client_fd = -1;
	r->hello_done = 0;
	r->rx_have = 0;
	r->conn_gen++;
	for (i = 0; i < r->slots; i++) {
		struct cl_slot *s = &r->slot[i];

		if (s->present) {
			s->present = 0;
			s->powered = 0;
			s->card_gen++;
		}
	}
	(void)pthread_cond_broadcast(&r->cond);
	wake_io_thread(r);
	cl_log(reason == CL_BYE_PROTOCOL || reason == CL_BYE_TIMEOUT ? CL_LOG_ERROR : CL_LOG_INFO,
	       "%s: bridge client disconnected (%s); all slots empty", r->socket_path, why);
}

/* ---- messages from the client ---- */

/* Returns 0, or the GOODBYE reason for dropping the client. */
static unsigned char handle_message_locked(struct cl_reader *r, unsigned char type, unsigned char slot,
					   const unsigned char *p, size_t len)
{
	struct cl_slot *s;

	if (!r->hello_done) {
		if (type != CL_MSG_HELLO || slot != 0 || len != 1)
			return CL_BYE_PROTOCOL;
		if (p[0] != CL_BRIDGE_VERSION)
			return CL_BYE_VERSION;
		r->hello_done = 1;
		cl_log(CL_LOG_INFO, "%s: bridge client ready", r->socket_path);
		return 0;
	}
	if (slot >= r->slots)
		return CL_BYE_PROTOCOL;
	s = &r->slot[slot];
	switch (type) {
	case CL_MSG_INSERT:
		if (len < 1 || len > CL_MAX_ATR || (p[0] != 0x3B && p[0] != 0x3F) || s->present)
			return CL_BYE_PROTOCOL;
		memcpy(s->atr, p, len);
		s->atr_len = len;
		s->present = 1;
		s->powered = 0;
		s->card_gen++;
		(void)pthread_cond_broadcast(&r->cond);
		cl_log(CL_LOG_INFO, "%s: card inserted in slot %u", r->socket_path, (unsigned)slot);
		return 0;
	case CL_MSG_REMOVE:
		if (len != 0 || !s->present)
			return CL_BYE_PROTOCOL;
		s->present = 0;
		s->powered = 0;
		s->card_gen++;
		(void)pthread_cond_broadcast(&r->cond);
		cl_log(CL_LOG_INFO, "%s: card removed from slot %u", r->socket_path, (unsigned)slot);
		if (send_msg_locked(r, CL_MSG_REMOVED, slot, NULL, 0) != 0)
			return CL_BYE_PROTOCOL;
		return 0;
	case CL_MSG_RESPONSE:
		if (len < 2 || len > CL_MAX_PAYLOAD || !s->waiting || s->response_ready)
			return CL_BYE_PROTOCOL;
		if (len > s->rx_cap) {
			s->response_overflow = 1;
		} else {
			memcpy(s->rx_buf, p, len);
			s->rx_len = len;
		}
		s->response_ready = 1;
		(void)pthread_cond_broadcast(&r->cond);
		return 0;
	default:
		return CL_BYE_PROTOCOL;
	}
}

/* Reads what the client sent and handles every complete message. */
static void service_client_locked(struct cl_reader *r)
{
	const size_t cap = CL_LENGTH_PREFIX + CL_MAX_LENGTH;
	size_t off = 0;
	ssize_t n;

	do
		n = recv(r->client_fd, r->rx + r->rx_have, cap - r->rx_have, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n == 0) {
		drop_client_locked(r, 0, "closed by the client");
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			drop_client_locked(r, 0, "read error");
		return;
	}
	r->rx_have += (size_t)n;
	while (r->client_fd >= 0 && r->rx_have - off >= CL_LENGTH_PREFIX) {
		const unsigned char *m = r->rx + off;
		uint32_t len = ((uint32_t)m[0] << 24) | ((uint32_t)m[1] << 16) | ((uint32_t)m[2] << 8) | m[3];
		unsigned char reason;

		if (len < CL_HEADER_AFTER_LENGTH || len > CL_MAX_LENGTH) {
			drop_client_locked(r, CL_BYE_PROTOCOL, "bad message length");
			return;
		}
		if (r->rx_have - off < CL_LENGTH_PREFIX + (size_t)len)
			break;
		reason = handle_message_locked(r, m[4], m[5], m + 6, (size_t)len - CL_HEADER_AFTER_LENGTH);
		if (reason) {
			drop_client_locked(r, reason, reason == CL_BYE_VERSION ? "unsupported version" : "malformed message");
			return;
		}
		off += CL_LENGTH_PREFIX + (size_t)len;
	}
	if (r->client_fd >= 0 && off > 0) {
		memmove(r->rx, r->rx + off, r->rx_have - off);
		r->rx_have -= off;
	}
}

static void accept_client_locked(struct cl_reader *r)
{
	struct ucred cred;
	socklen_t cred_len = sizeof cred;
	struct timeval tv;
	unsigned char welcome[2];
	int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0 || cred_len != sizeof cred) {
		cl_log(CL_LOG_ERROR, "%s: cannot read peer credentials, connection refused", r->socket_path);
		(void)close(fd);
		return;
	}
	if (!(cred.uid == 0 || (r->uid_set && cred.uid == r->uid))) {
		cl_log(CL_LOG_ERROR, "%s: connection from uid %u (pid %d) refused: only root%s may insert cards",
		       r->socket_path, (unsigned)cred.uid, (int)cred.pid, r->uid_set ? " and the configured uid" : "");
		(void)close(fd);
		return;
	}
	if (r->client_fd >= 0) {
		unsigned char bye[CL_LENGTH_PREFIX + CL_HEADER_AFTER_LENGTH + 1] = {0, 0, 0, 3, CL_MSG_GOODBYE, 0,
										       CL_BYE_BUSY};

		(void)send(fd, bye, sizeof bye, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)close(fd);
		cl_log(CL_LOG_ERROR, "%s: second bridge client (pid %d) refused: one is connected", r->socket_path,
		       (int)cred.pid);
		return;
	}
	tv.tv_sec = CL_SEND_TIMEOUT_MS / 1000;
	tv.tv_usec = (CL_SEND_TIMEOUT_MS % 1000) * 1000;
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	r->client_fd = fd;
	r->hello_done = 0;
	r->rx_have = 0;
	r->conn_gen++;
	deadline_after(&r->hello_deadline, CL_HELLO_TIMEOUT_MS);
	/* The handler speaks first, so a refused client (GOODBYE) has sent nothing yet and reads the
	 * reason cleanly instead of a reset. */
	welcome[0] = CL_BRIDGE_VERSION;
	welcome[1] = (unsigned char)r->slots;
	if (send_msg_locked(r, CL_MSG_WELCOME, 0, welcome, sizeof welcome) != 0) {
		drop_client_locked(r, 0, "send failed");
		return;
	}
	cl_log(CL_LOG_INFO, "%s: bridge client connected (uid %u, pid %d)", r->socket_path, (unsigned)cred.uid,
	       (int)cred.pid);
}

static void *io_thread_main(void *arg)
{
	struct cl_reader *r = arg;

	for (;;) {
		struct pollfd pfd[3];
		nfds_t nfds = 2;
		int cfd, timeout = -1, rc;
		unsigned long cg;

		(void)pthread_mutex_lock(&r->lock);
		if (r->stopping) {
			(void)pthread_mutex_unlock(&r->lock);
			break;
		}
		cfd = r->client_fd;
		cg = r->conn_gen;
		if (cfd >= 0 && !r->hello_done) {
			long ms = ms_until(&r->hello_deadline);

			timeout = ms > INT_MAX ? INT_MAX : (int)ms;
		}
		(void)pthread_mutex_unlock(&r->lock);

		pfd[0].fd = r->wake[0];
		pfd[0].events = POLLIN;
		pfd[1].fd = r->listen_fd;
		pfd[1].events = POLLIN;
		if (cfd >= 0) {
			pfd[2].fd = cfd;
			pfd[2].events = POLLIN;
			nfds = 3;
		}
		rc = poll(pfd, nfds, timeout);
		if (rc < 0) {
			if (errno != EINTR) {
				cl_log(CL_LOG_ERROR, "%s: poll failed: %s", r->socket_path, strerror(errno));
				(void)usleep(100000);
			}
			continue;
		}
		if (pfd[0].revents) {
			char buf[64];

			while (read(r->wake[0], buf, sizeof buf) > 0)
				;
		}
		(void)pthread_mutex_lock(&r->lock);
		if (!r->stopping) {
			if (r->conn_gen == cg && r->client_fd >= 0) {
				if (nfds == 3 && pfd[2].revents)
					service_client_locked(r);
				if (r->conn_gen == cg && r->client_fd >= 0 && !r->hello_done &&
				    ms_until(&r->hello_deadline) == 0)
					drop_client_locked(r, CL_BYE_PROTOCOL, "no HELLO in time");
			}
			if (pfd[1].revents & POLLIN)
				accept_client_locked(r);
		}
		(void)pthread_mutex_unlock(&r->lock);
	}
	return NULL;
}

/* ---- reader set-up ---- */

/* Strict decimal: digits only, value in [min, max]. */
static int parse_number(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > max)
			return -1;
	}
	if (v < min)
		return -1;
	*out = v;
	return 0;
}

/* DEVICENAME: <absolute socket path>[:slots=N][:uid=U] (options in any order, each once). */
static int parse_device(struct cl_reader *r, const char *device)
{
	char buf[CL_MAX_DEVICENAME];
	int have_slots = 0;
	char *colon;

	if (strlen(device) >= sizeof buf)
		return -1;
	strcpy(buf, device);
	r->slots = CL_DEFAULT_SLOTS;
	r->uid_set = 0;
	while ((colon = strrchr(buf, ':')) != NULL) {
		const char *opt = colon + 1;
		unsigned long v;

		if (strncmp(opt, "slots=", 6) == 0) {
			if (have_slots || parse_number(opt + 6, 1, CL_MAX_SLOTS, &v) != 0) {
				cl_log(CL_LOG_CRITICAL, "DEVICENAME %s: slots= must be a number from 1 to %d, given once",
				       device, CL_MAX_SLOTS);
				return -1;
			}
			have_slots = 1;
			r->slots = (unsigned)v;
		} else if (strncmp(opt, "uid=", 4) == 0) {
			if (r->uid_set || parse_number(opt + 4, 0, (uid_t)-2, &v) != 0) {
				cl_log(CL_LOG_CRITICAL, "DEVICENAME %s: uid= must be a numeric uid, given once", device);
				return -1;
			}
			r->uid_set = 1;
			r->uid = (uid_t)v;
		} else {
			break;
		}
		*colon = '\0';
	}
	if (buf[0] != '/' || strlen(buf) >= sizeof r->socket_path) {
		cl_log(CL_LOG_CRITICAL, "DEVICENAME %s: the socket path must be absolute and shorter than %zu bytes",
		       device, sizeof r->socket_path);
		return -1;
	}
	strcpy(r->socket_path, buf);
	return 0;
}

/* mkdir -p of the socket's directory; directories it creates get CL_SOCKET_DIR_MODE. */
static int make_parent_dirs(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *p;

	strcpy(dir, path);
	p = strrchr(dir, '/');
	if (p == NULL || p == dir)
		return 0;
	*p = '\0';
	for (p = dir + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char saved = *p;

			*p = '\0';
			if (mkdir(dir, CL_SOCKET_DIR_MODE) == 0) {
				/* mkdir() honours the umask: set the mode explicitly. */
				if (chmod(dir, CL_SOCKET_DIR_MODE) != 0)
					return -1;
			} else if (errno != EEXIST) {
				return -1;
			}
			*p = saved;
			if (saved == '\0')
				break;
		}
	}
	return 0;
}

static int open_listener(struct cl_reader *r)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd;

	if (make_parent_dirs(r->socket_path) != 0) {
		cl_log(CL_LOG_CRITICAL, "%s: cannot create the socket directory: %s", r->socket_path, strerror(errno));
		return -1;
	}
	if (lstat(r->socket_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			cl_log(CL_LOG_CRITICAL, "%s exists and is not a socket: not replacing it", r->socket_path);
			return -1;
		}
		(void)unlink(r->socket_path); /* stale socket of an earlier pcscd */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, r->socket_path);
	/* Nobody can connect before listen(): set mode and owner in between. */
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		cl_log(CL_LOG_CRITICAL, "%s: bind failed: %s", r->socket_path, strerror(errno));
		(void)close(fd);
		return -1;
	}
	if (chmod(r->socket_path, CL_SOCKET_MODE) != 0 ||
	    (r->uid_set && chown(r->socket_path, r->uid, (gid_t)-1) != 0) || listen(fd, CL_LISTEN_BACKLOG) != 0) {
		cl_log(CL_LOG_CRITICAL, "%s: cannot set up the socket: %s", r->socket_path, strerror(errno));
		(void)close(fd);
		(void)unlink(r->socket_path);
		return -1;
	}
	r->listen_fd = fd;
	return 0;
}

static void free_reader(struct cl_reader *r)
{
	if (r->listen_fd >= 0) {
		(void)close(r->listen_fd);
		(void)unlink(r->socket_path);
	}
	if (r->client_fd >= 0)
		(void)close(r->client_fd);
	if (r->wake[0] >= 0)
		(void)close(r->wake[0]);
	if (r->wake[1] >= 0)
		(void)close(r->wake[1]);
	free(r->rx);
	(void)pthread_cond_destroy(&r->cond);
	(void)pthread_mutex_destroy(&r->lock);
	memset(r, 0, sizeof *r);
}

static int open_reader(struct cl_reader *r, const char *device)
{
	pthread_condattr_t ca;

	memset(r, 0, sizeof *r);
	r->listen_fd = r->client_fd = r->wake[0] = r->wake[1] = -1;
	(void)pthread_mutex_init(&r->lock, NULL);
	(void)pthread_condattr_init(&ca);
	(void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	(void)pthread_cond_init(&r->cond, &ca);
	(void)pthread_condattr_destroy(&ca);
	if (parse_device(r, device) != 0)
		goto fail;
	strcpy(r->device, device);
	r->rx = malloc(CL_LENGTH_PREFIX + CL_MAX_LENGTH);
	if (r->rx == NULL || pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) != 0 || open_listener(r) != 0)
		goto fail;
	if (pthread_create(&r->io_thread, NULL, io_thread_main, r) != 0) {
		cl_log(CL_LOG_CRITICAL, "%s: cannot start the I/O thread", r->socket_path);
		goto fail;
	}
	r->in_use = 1;
	if (r->uid_set)
		cl_log(CL_LOG_INFO, "listening on %s (%u slots; root and uid %u may connect)", r->socket_path, r->slots,
		       (unsigned)r->uid);
	else
		cl_log(CL_LOG_INFO, "listening on %s (%u slots; only root may connect)", r->socket_path, r->slots);
	return 0;
fail:
	free_reader(r);
	return -1;
}

static void close_reader(struct cl_reader *r)
{
	(void)pthread_mutex_lock(&r->lock);
	r->stopping = 1;
	drop_client_locked(r, CL_BYE_SHUTDOWN, "reader closed");
	(void)pthread_cond_broadcast(&r->cond);
	(void)pthread_mutex_unlock(&r->lock);
	wake_io_thread(r);
	(void)pthread_join(r->io_thread, NULL);
	cl_log(CL_LOG_INFO, "%s: closed", r->socket_path);
	free_reader(r);
}

/* ---- IFD Handler API v3 ---- */

CL_EXPORT RESPONSECODE IFDHCreateChannelByName(DWORD Lun, LPSTR DeviceName)
{
	unsigned long ri = (unsigned long)Lun >> 16, si = (unsigned long)Lun & 0xFFFFUL;
	struct cl_reader *r;
	RESPONSECODE rv = IFD_COMMUNICATION_ERROR;

	if (ri >= CL_MAX_READERS || DeviceName == NULL)
		return IFD_COMMUNICATION_ERROR;
	(void)pthread_mutex_lock(&readers_lock);
	r = &readers[ri];
	if (!r->in_use) {
		if (open_reader(r, DeviceName) != 0)
			goto out;
	} else if (strcmp(r->device, DeviceName) != 0) {
		cl_log(CL_LOG_CRITICAL, "reader %lu is already open with another DEVICENAME", ri);
		goto out;
	}
	if (si >= r->slots)
		goto out;
	(void)pthread_mutex_lock(&r->lock);
	r->slot[si].channel_open = 1;
	r->slot[si].stop_polling = 0;
	(void)pthread_mutex_unlock(&r->lock);
	rv = IFD_SUCCESS;
out:
	(void)pthread_mutex_unlock(&readers_lock);
	return rv;
}

CL_EXPORT RESPONSECODE IFDHCreateChannel(DWORD Lun, DWORD Channel)
{
	(void)Lun;
	(void)Channel;
	cl_log(CL_LOG_CRITICAL, "the cardlink reader needs DEVICENAME <socket path>:slots=N[:uid=U] in reader.conf");
	return IFD_COMMUNICATION_ERROR;
}

CL_EXPORT RESPONSECODE IFDHCloseChannel(DWORD Lun)
{
	struct cl_reader *r;
	struct cl_slot *s;
	unsigned i;
	int open = 0;

	(void)pthread_mutex_lock(&readers_lock);
	r = reader_of(Lun);
	if (r == NULL || (s = slot_of(r, Lun)) == NULL) {
		(void)pthread_mutex_unlock(&readers_lock);
		return IFD_COMMUNICATION_ERROR;
	}
	(void)pthread_mutex_lock(&r->lock);
	s->channel_open = 0;
	s->stop_polling = 1;
	(void)pthread_cond_broadcast(&r->cond);
	for (i = 0; i < r->slots; i++)
		open |= r->slot[i].channel_open;
	(void)pthread_mutex_unlock(&r->lock);
	if (!open)
		close_reader(r);
	(void)pthread_mutex_unlock(&readers_lock);
	return IFD_SUCCESS;
}

/* Waits until the presence of the card in the slot differs from what pcscd was last told, the
 * timeout passes, or stop_polling() is called. */
static RESPONSECODE poll_presence(DWORD Lun, int timeout_ms)
{
	struct cl_reader *r = reader_of(Lun);
	struct cl_slot *s;
	struct timespec deadline;

	if (r == NULL)
		return IFD_COMMUNICATION_ERROR;
	deadline_after(&deadline, timeout_ms < 0 ? 0 : timeout_ms);
	(void)pthread_mutex_lock(&r->lock);
	s = slot_of(r, Lun);
	while (s != NULL && !s->stop_polling && !r->stopping && s->card_gen == s->reported_gen &&
	       s->present == s->reported_present) {
		if (pthread_cond_timedwait(&r->cond, &r->lock, &deadline) == ETIMEDOUT)
			break;
	}
	/* A stop request is one-shot: pcscd also uses it (SCardConnect/Disconnect) just to restart
	 * the wait with another timeout. */
	if (s != NULL)
		s->stop_polling = 0;
	(void)pthread_mutex_unlock(&r->lock);
	return IFD_SUCCESS;
}

static RESPONSECODE stop_polling(DWORD Lun)
{
	struct cl_reader *r = reader_of(Lun);
	struct cl_slot *s;

	if (r == NULL)
		return IFD_COMMUNICATION_ERROR;
	(void)pthread_mutex_lock(&r->lock);
	s = slot_of(r, Lun);
	if (s != NULL)
		s->stop_polling = 1;
	(void)pthread_cond_broadcast(&r->cond);
	(void)pthread_mutex_unlock(&r->lock);
	return IFD_SUCCESS;
}

static RESPONSECODE put_byte(PDWORD Length, PUCHAR Value, unsigned char v)
{
	if (*Length < 1)
		return IFD_ERROR_INSUFFICIENT_BUFFER;
	Value[0] = v;
	*Length = 1;
	return IFD_SUCCESS;
}

static RESPONSECODE put_fn(PDWORD Length, PUCHAR Value, const void *fnp, size_t size)
{
	if (*Length < size)
		return IFD_ERROR_INSUFFICIENT_BUFFER;
	memcpy(Value, fnp, size);
	*Length = (DWORD)size;
	return IFD_SUCCESS;
}

CL_EXPORT RESPONSECODE IFDHGetCapabilities(DWORD Lun, DWORD Tag, PDWORD Length, PUCHAR Value)
{
	static const char vendor[] = "cardlink";
	struct cl_reader *r = reader_of(Lun);
	struct cl_slot *s;
	RESPONSECODE rv = IFD_SUCCESS;

	if (Length == NULL || Value == NULL)
		return IFD_COMMUNICATION_ERROR;
	if (r == NULL) {
		*Length = 0;
		return IFD_COMMUNICATION_ERROR;
	}
	switch (Tag) {
	case TAG_IFD_ATR:
	case SCARD_ATTR_ATR_STRING:
		(void)pthread_mutex_lock(&r->lock);
		s = slot_of(r, Lun);
		if (s == NULL) {
			*Length = 0;
			rv = IFD_COMMUNICATION_ERROR;
		} else if (!s->present) {
			*Length = 0;
		} else if (*Length < s->atr_len) {
			rv = IFD_ERROR_INSUFFICIENT_BUFFER;
		} else {
			memcpy(Value, s->atr, s->atr_len);
			*Length = (DWORD)s->atr_len;
		}
		(void)pthread_mutex_unlock(&r->lock);
		return rv;
	case TAG_IFD_SLOTS_NUMBER:
		return put_byte(Length, Value, (unsigned char)r->slots);
	case TAG_IFD_SIMULTANEOUS_ACCESS:
		return put_byte(Length, Value, CL_MAX_READERS);
	case TAG_IFD_THREAD_SAFE:
	case TAG_IFD_SLOT_THREAD_SAFE:
	case TAG_IFD_POLLING_THREAD_KILLABLE:
		return put_byte(Length, Value, 0);
	case TAG_IFD_POLLING_THREAD_WITH_TIMEOUT: {
		RESPONSECODE (*fn)(DWORD, int) = poll_presence;

		return put_fn(Length, Value, &fn, sizeof fn);
	}
	case TAG_IFD_STOP_POLLING_THREAD: {
		RESPONSECODE (*fn)(DWORD) = stop_polling;

		return put_fn(Length, Value, &fn, sizeof fn);
	}
	case SCARD_ATTR_VENDOR_NAME:
		if (*Length < sizeof vendor)
			return IFD_ERROR_INSUFFICIENT_BUFFER;
		memcpy(Value, vendor, sizeof vendor);
		*Length = sizeof vendor;
		return IFD_SUCCESS;
	default:
		*Length = 0;
		return IFD_ERROR_TAG;
	}
}

CL_EXPORT RESPONSECODE IFDHSetCapabilities(DWORD Lun, DWORD Tag, DWORD Length, PUCHAR Value)
{
	(void)Lun;
	(void)Tag;
	(void)Length;
	(void)Value;
	return IFD_ERROR_TAG;
}

CL_EXPORT RESPONSECODE IFDHSetProtocolParameters(DWORD Lun, DWORD Protocol, UCHAR Flags, UCHAR PTS1, UCHAR PTS2,
						 UCHAR PTS3)
{
	(void)Lun;
	(void)Flags;
	(void)PTS1;
	(void)PTS2;
	(void)PTS3;
	/* A virtual card has no transmission protocol to negotiate: accept T=0 and T=1. */
	if (Protocol != CL_PROTOCOL_T0 && Protocol != CL_PROTOCOL_T1)
		return IFD_PROTOCOL_NOT_SUPPORTED;
	return IFD_SUCCESS;
}

CL_EXPORT RESPONSECODE IFDHPowerICC(DWORD Lun, DWORD Action, PUCHAR Atr, PDWORD AtrLength)
{
	struct cl_reader *r = reader_of(Lun);
	struct cl_slot *s;
	RESPONSECODE rv = IFD_SUCCESS;
	unsigned char type;

	if (r == NULL)
		return IFD_COMMUNICATION_ERROR;
	(void)pthread_mutex_lock(&r->lock);
	s = slot_of(r, Lun);
	if (s == NULL) {
		rv = IFD_COMMUNICATION_ERROR;
		goto fail;
	}
	switch (Action) {
	case IFD_POWER_DOWN:
		if (s->present && s->powered &&
		    send_msg_locked(r, CL_MSG_POWER_OFF, (unsigned char)(Lun & 0xFFFF), NULL, 0) != 0)
			drop_client_locked(r, 0, "send failed");
		s->powered = 0;
		if (AtrLength != NULL)
			*AtrLength = 0;
		(void)pthread_mutex_unlock(&r->lock);
		return IFD_SUCCESS;
	case IFD_POWER_UP:
	case IFD_RESET:
		if (!s->present) {
			rv = IFD_ICC_NOT_PRESENT;
			goto fail;
		}
		if (Atr == NULL || AtrLength == NULL || *AtrLength < s->atr_len) {
			rv = IFD_ERROR_POWER_ACTION;
			goto fail;
		}
		type = (Action == IFD_RESET && s->powered) ? CL_MSG_RESET : CL_MSG_POWER_ON;
		if (send_msg_locked(r, type, (unsigned char)(Lun & 0xFFFF), NULL, 0) != 0) {
			drop_client_locked(r, 0, "send failed");
			rv = IFD_ICC_NOT_PRESENT;
			goto fail;
		}
		s->powered = 1;
		memcpy(Atr, s->atr, s->atr_len);
		*AtrLength = (DWORD)s->atr_len;
		(void)pthread_mutex_unlock(&r->lock);
		return IFD_SUCCESS;
	default:
		rv = IFD_NOT_SUPPORTED;
		goto fail;
	}
fail:
	(void)pthread_mutex_unlock(&r->lock);
	if (AtrLength != NULL)
		*AtrLength = 0;
	return rv;
}

CL_EXPORT RESPONSECODE IFDHTransmitToICC(DWORD Lun, SCARD_IO_HEADER SendPci, PUCHAR TxBuffer, DWORD TxLength,
					 PUCHAR RxBuffer, PDWORD RxLength, PSCARD_IO_HEADER RecvPci)
{
	struct cl_reader *r = reader_of(Lun);
	struct cl_slot *s;
	struct timespec deadline;
	unsigned long gen, cg;
	RESPONSECODE rv = IFD_COMMUNICATION_ERROR;

	if (RxLength == NULL)
		return IFD_COMMUNICATION_ERROR;
	if (r == NULL || TxBuffer == NULL || RxBuffer == NULL || TxLength == 0 || TxLength > CL_MAX_PAYLOAD) {
		*RxLength = 0;
		return IFD_COMMUNICATION_ERROR;
	}
	(void)pthread_mutex_lock(&r->lock);
	s = slot_of(r, Lun);
	if (s == NULL || s->waiting) {
		rv = IFD_COMMUNICATION_ERROR;
		goto out;
	}
	if (!s->present || r->client_fd < 0) {
		rv = IFD_ICC_NOT_PRESENT;
		goto out;
	}
	if (!s->powered)
		goto out;
	gen = s->card_gen;
	cg = r->conn_gen;
	s->waiting = 1;
	s->response_ready = 0;
	s->response_overflow = 0;
	s->rx_buf = RxBuffer;
	s->rx_cap = *RxLength;
	s->rx_len = 0;
	if (send_msg_locked(r, CL_MSG_APDU, (unsigned char)(Lun & 0xFFFF), TxBuffer, TxLength) != 0) {
		drop_client_locked(r, 0, "send failed");
	} else {
		deadline_after(&deadline, CL_TRANSMIT_TIMEOUT_MS);
		while (!s->response_ready && s->card_gen == gen && r->conn_gen == cg) {
			if (pthread_cond_timedwait(&r->cond, &r->lock, &deadline) == ETIMEDOUT) {
				if (!s->response_ready && r->conn_gen == cg)
					drop_client_locked(r, CL_BYE_TIMEOUT, "no RESPONSE in time");
				break;
			}
		}
	}
	s->waiting = 0;
	s->rx_buf = NULL;
	if (s->response_ready && !s->response_overflow) {
		*RxLength = (DWORD)s->rx_len;
		if (RecvPci != NULL)
			RecvPci->Protocol = SendPci.Protocol;
		(void)pthread_mutex_unlock(&r->lock);
		return IFD_SUCCESS;
	}
	if (s->response_overflow)
		rv = IFD_ERROR_INSUFFICIENT_BUFFER;
	else if (s->card_gen != gen)
		rv = IFD_ICC_NOT_PRESENT;
	s->response_ready = 0;
out:
	(void)pthread_mutex_unlock(&r->lock);
	*RxLength = 0;
	return rv;
}

CL_EXPORT RESPONSECODE IFDHControl(DWORD Lun, DWORD dwControlCode, PUCHAR TxBuffer, DWORD TxLength, PUCHAR RxBuffer,
				   DWORD RxLength, LPDWORD pdwBytesReturned)
{
	(void)Lun;
	(void)dwControlCode;
	(void)TxBuffer;
	(void)TxLength;
	(void)RxBuffer;
	(void)RxLength;
	if (pdwBytesReturned != NULL)
		*pdwBytesReturned = 0;
	/* No reader features (no PIN pad, no escape commands). */
	return IFD_ERROR_NOT_SUPPORTED;
}

CL_EXPORT RESPONSECODE IFDHICCPresence(DWORD Lun)
{
	struct cl_reader *r = reader_of(Lun);
	struct cl_slot *s;
	RESPONSECODE rv;

	if (r == NULL)
		return IFD_COMMUNICATION_ERROR;
	(void)pthread_mutex_lock(&r->lock);
	s = slot_of(r, Lun);
	if (s == NULL) {
		rv = IFD_COMMUNICATION_ERROR;
	} else if (s->present && s->reported_present && s->card_gen != s->reported_gen) {
		/* Removed and inserted again since pcscd last asked: report the
		 * removal once, so pcscd never mixes up two cards. */
		s->reported_present = 0;
		s->reported_gen = s->card_gen;
		rv = IFD_ICC_NOT_PRESENT;
	} else {
		s->reported_present = s->present;
		s->reported_gen = s->card_gen;
		rv = s->present ? IFD_ICC_PRESENT : IFD_ICC_NOT_PRESENT;
	}
	(void)pthread_mutex_unlock(&r->lock);
	return rv;
}
