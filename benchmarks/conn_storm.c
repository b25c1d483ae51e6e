/* Open many idle AMQP connections, each with a channel and a consumer, as cheaply as a client can.
 *
 * The client side of benchmarks/connections.py --client c: a Python client costs about as much CPU
 * per connection as the broker does, so on a small machine it measures itself as much as the broker.
 * This one does the same handshake with librabbitmq (protocol header, Start-Ok with PLAIN, Tune-Ok,
 * Open, Channel.Open, Basic.Qos, Basic.Consume on one shared queue) from THREADS threads, each
 * opening its share one after the other, and keeps every connection open.
 *
 *   conn_storm HOST PORT COUNT THREADS QUEUE
 *
 * Prints one line when every connection is up:
 *   opened N failed F seconds S client_cpu_ms_per_connection C
 * then holds the connections until its standard input closes, and exits.
 *
 * Build: make -C benchmarks conn_storm (needs librabbitmq-dev, build-essential, pkg-config).
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *g_host, *g_queue;
static int g_port, g_count, g_threads;
static amqp_connection_state_t *g_conns;
static int g_failed;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(int i, const char *what) {
  pthread_mutex_lock(&g_lock);
  if (++g_failed <= 3) fprintf(stderr, "connection %d failed: %s\n", i, what);
  pthread_mutex_unlock(&g_lock);
}

static int reply_ok(amqp_connection_state_t c) {
  return amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
}

/* One connection through the whole handshake and a consumer; NULL when any step fails. */
static amqp_connection_state_t open_one(int i, int declare) {
  amqp_connection_state_t c = amqp_new_connection();
  amqp_socket_t *s = amqp_tcp_socket_new(c);
  if (!s || amqp_socket_open(s, g_host, g_port) != AMQP_STATUS_OK) {
    fail(i, "connect");
    amqp_destroy_connection(c);
    return NULL;
  }
  /* frame_max 8192 (the least a broker must take) keeps this client's buffers small */
  amqp_rpc_reply_t r = amqp_login(c, "/", 0, 8192, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    fail(i, "login");
    amqp_destroy_connection(c);
    return NULL;
  }
  amqp_bytes_t q = amqp_cstring_bytes(g_queue);
  int ok = amqp_channel_open(c, 1) != NULL && reply_ok(c);
  if (ok && declare) ok = amqp_queue_declare(c, 1, q, 0, 0, 0, 0, amqp_empty_table) != NULL && reply_ok(c);
  if (ok) ok = amqp_basic_qos(c, 1, 0, 10, 0) != NULL && reply_ok(c);
  if (ok) ok = amqp_basic_consume(c, 1, q, amqp_empty_bytes, 0, 0, 0, amqp_empty_table) != NULL && reply_ok(c);
  if (!ok) {
    fail(i, "channel, qos or consume");
    amqp_destroy_connection(c);
    return NULL;
  }
  return c;
}

static void *worker(void *arg) {
  long t = (long)arg;
  for (int i = (int)t + 1; i < g_count; i += g_threads) g_conns[i] = open_one(i, 0);
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s HOST PORT COUNT THREADS QUEUE\n", argv[0]);
    return 2;
  }
  g_host = argv[1];
  g_port = atoi(argv[2]);
  g_count = atoi(argv[3]);
  g_threads = atoi(argv[4]);
  g_queue = argv[5];
  if (g_count < 1 || g_threads < 1 || g_port < 1) {
    fprintf(stderr, "COUNT, THREADS and PORT must be positive\n");
    return 2;
  }
  g_conns = calloc((size_t)g_count, sizeof *g_conns);
  pthread_t *th = calloc((size_t)g_threads, sizeof *th);
  if (!g_conns || !th) return 1;
  g_conns[0] = open_one(0, 1); /* declares the queue; not timed, as in connections.py */
  double t0 = now(), c0 = cpu_s();
  for (long t = 0; t < g_threads; t++) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&th[t], &attr, worker, (void *)t) != 0) {
      fprintf(stderr, "cannot start thread %ld\n", t);
      return 1;
    }
    pthread_attr_destroy(&attr);
  }
  for (int t = 0; t < g_threads; t++) pthread_join(th[t], NULL);
  double took = now() - t0, cpu = cpu_s() - c0;
  int opened = 0;
  for (int i = 0; i < g_count; i++) opened += g_conns[i] != NULL;
  printf("opened %d failed %d seconds %.3f client_cpu_ms_per_connection %.3f\n", opened, g_failed, took,
         cpu * 1000.0 / (g_count > 1 ? g_count - 1 : 1));
  fflush(stdout);
  char buf[256];
  while (fgets(buf, sizeof buf, stdin) != NULL) {
  }
  for (int i = 0; i < g_count; i++)
    if (g_conns[i]) amqp_destroy_connection(g_conns[i]);
  return 0;
}
