// storage-uring specifics the conformance suite cannot know: options, io_uring missing (seccomp),
// exact messages, queue order at queue_depth 1, the demand reserve, submitting
// threads that exit, more files than registered slots, SQPOLL. The generic contract is checked by
// tests/conformance (ctest: storage_conformance_uring*).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "storage_conformance.hpp"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <thread>

using namespace pmoe::conformance;

namespace {

const StorageLibrary& lib() {
  static const StorageLibrary l(PMOE_URING_PLUGIN, "storage-uring");
  return l;
}

// create() through the C table: status and message, no exception.
pmoe_status try_create(const OptionList& o, std::string* msg = nullptr) {
  std::vector<pmoe_option> items;
  for (const auto& [k, v] : o) items.push_back({k.c_str(), v.c_str()});
  const pmoe_options opts{items.data(), items.size()};
  pmoe_storage* s = nullptr;
  pmoe_error err{};
  const pmoe_status st = lib().vt().create(lib().host(), &opts, &s, &err);
  if (st == PMOE_OK) lib().vt().destroy(s);
  if (msg) *msg = err.message;
  return st;
}

// io_uring may be refused here (seccomp in containers, kernel.io_uring_disabled): then the data
// tests have nothing to check, and the one that matters is that create says so clearly.
bool uring_available() {
  static const bool ok = [] {
    std::string msg;
    const pmoe_status st = try_create({}, &msg);
    if (st != PMOE_OK)
      MESSAGE("io_uring is unavailable here, storage-uring data checks are skipped: " << msg);
    return st == PMOE_OK;
  }();
  return ok;
}

#define REQUIRE_URING()             \
  do {                              \
    if (!uring_available()) return; \
  } while (0)

// A file on the build tree's disk (real O_DIRECT, unlike tmpfs).
struct DataFile {
  std::string path;
  std::vector<uint8_t> data;
  explicit DataFile(const std::string& name, size_t size = (1 << 20) + 300) {
    std::filesystem::create_directories(PMOE_URING_DATA_DIR);
    path = std::string(PMOE_URING_DATA_DIR) + "/" + std::to_string(::getpid()) + "-" + name;
    data = make_content(size, 42);
    write_file(path, data);
  }
  ~DataFile() { std::remove(path.c_str()); }
};

bool has(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Runs `create` in a child whose seccomp filter fails io_uring_setup with `err`; returns the
// status and message the child saw, or a note why it could not run.
std::pair<int, std::string> create_under_seccomp(int err) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<uint32_t>(err) & 0xffff)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
      ::_exit(100);
    std::string msg;
    const int st = try_create({}, &msg);
    (void)!::write(fds[1], msg.data(), msg.size());
    ::_exit(st);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    msg.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int ws = 0;
  REQUIRE(::waitpid(pid, &ws, 0) == pid);
  REQUIRE(WIFEXITED(ws));
  return {WEXITSTATUS(ws), msg};
}

}  // namespace

TEST_CASE("storage-uring: without io_uring, create fails with NOT_SUPPORTED and says why") {
  for (int err : {ENOSYS, EPERM}) {
    CAPTURE(err);
    const auto [code, msg] = create_under_seccomp(err);
    if (code == 100) {
      MESSAGE("cannot install a seccomp filter here; check skipped");
      return;
    }
    CHECK(code == PMOE_ERR_NOT_SUPPORTED);
    CHECK_MESSAGE(msg == std::string("io_uring is not available on this system (") +
                             std::strerror(err) + "): use storage-posix",
                  msg);
  }
  if (!uring_available()) {  // then this machine's own refusal must read the same way
    std::string msg;
    CHECK(try_create({}, &msg) == PMOE_ERR_NOT_SUPPORTED);
    CHECK_MESSAGE(has(msg, "use storage-posix"), msg);
  }
}

TEST_CASE("storage-uring: options are checked") {
  REQUIRE_URING();
  CHECK(try_create({{"queue_depth", "1"}}) == PMOE_OK);
  CHECK(try_create({{"queue_depth", "4096"}, {"direct_io", "true"}}) == PMOE_OK);
  std::string msg;
  CHECK(try_create({{"queue_depth", "0"}}, &msg) == PMOE_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE(msg == "option 'queue_depth' must be 1..4096, got 0", msg);
  CHECK(try_create({{"queue_depth", "4097"}}, &msg) == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(try_create({{"queue_depth", "deep"}}, &msg) == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(has(msg, "queue_depth"));
  CHECK(try_create({{"direct_io", "maybe"}}, &msg) == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(has(msg, "direct_io"));
  CHECK(try_create({{"sqpoll", "often"}}, &msg) == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(has(msg, "sqpoll"));
}

TEST_CASE("storage-uring: O_DIRECT refused by the filesystem") {
  REQUIRE_URING();
  const std::string proc = "/proc/self/status";  // procfs refuses O_DIRECT with EINVAL
  SUBCASE("falls back to buffered reads with a warning") {
    lib().log().clear();
    StorageInstance st(lib());
    pmoe_file* f = st.must_open(proc, PMOE_OPEN_DIRECT);
    CHECK(st.direct_alignment(f) == 1);
    CHECK(lib().log().contains("warn storage-uring: filesystem of '" + proc +
                               "' does not support direct I/O"));
  }
  SUBCASE("or fails when direct_io_fallback is false") {
    StorageInstance st(lib(), {{"direct_io_fallback", "false"}});
    const auto r = st.open(proc, PMOE_OPEN_DIRECT);
    CHECK(r.status == PMOE_ERR_NOT_SUPPORTED);
    CHECK_MESSAGE(has(r.err.message, "'" + proc + "' does not support direct I/O"),
                  std::string(r.err.message));
    CHECK(st.open(proc, 0).status == PMOE_OK);
  }
}

TEST_CASE("storage-uring: error messages name the path and the numbers") {
  REQUIRE_URING();
  DataFile file("msg.bin", 10000);
  StorageInstance st(lib());
  const std::string missing = file.path + ".missing";
  auto r = st.open(missing, 0);
  CHECK(r.status == PMOE_ERR_NOT_FOUND);
  CHECK(r.err.sys_errno == ENOENT);
  CHECK(std::string(r.err.message) == "cannot open '" + missing + "': No such file or directory");

  r = st.open(PMOE_URING_DATA_DIR, 0);
  CHECK(r.status == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(has(r.err.message, "not a regular file"));

  pmoe_file* f = st.must_open(file.path, 0);
  uint8_t buf[64];
  const pmoe_read_req reqs[] = {{f, 0, 8, buf, 0, 0, 0}, {f, 9990, 20, buf, 1, 0, 0}};
  pmoe_error err{};
  CHECK(st.submit(reqs, 2, &err) == PMOE_ERR_OUT_OF_RANGE);
  CHECK(std::string(err.message) == "request 1: read past end of file '" + file.path +
                                        "': offset 9990 length 20 file size 10000");
  st.close(f);
  CHECK(st.submit(reqs, 1, &err) == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(err.message) == "request 0: file is not open");
}

TEST_CASE("storage-uring: a file truncated under us logs the short read") {
  REQUIRE_URING();
  for (uint32_t flags : {0u, PMOE_OPEN_DIRECT}) {
    DataFile file("trunc.bin");
    lib().log().clear();
    StorageInstance st(lib());
    pmoe_file* f = st.must_open(file.path, flags);
    REQUIRE(::truncate(file.path.c_str(), 5000) == 0);
    std::vector<uint8_t> buf(8192);
    const pmoe_read_req req{f, 4096, 8192, buf.data(), 7, 0, 0};
    pmoe_error err{};
    REQUIRE(st.submit(&req, 1, &err) == PMOE_OK);
    const auto done = st.poll_all(1);
    REQUIRE(done.size() == 1);
    CHECK(done[0].status == PMOE_ERR_OUT_OF_RANGE);
    CHECK(done[0].bytes == 5000 - 4096);
    CHECK(std::memcmp(buf.data(), file.data.data() + 4096, 5000 - 4096) == 0);
    CHECK_MESSAGE(lib().log().contains("read past end of file '" + file.path +
                                       "': offset 4096 length 8192 file size 5000"),
                  lib().log().dump());
  }
}

TEST_CASE("storage-uring: queue_depth 1 serves by priority, FIFO within a priority") {
  REQUIRE_URING();
  DataFile file("order.bin");
  StorageInstance st(lib(), {{"queue_depth", "1"}});
  pmoe_file* f = st.must_open(file.path, 0);
  std::vector<uint8_t> buf(64 * 4096);
  std::vector<pmoe_read_req> reqs;
  for (uint32_t i = 0; i < 64; ++i)  // priorities 3,2,1,0,3,2,... in submission order
    reqs.push_back({f, i * 4096ull, 4096, buf.data() + i * 4096, i, 3 - i % 4, 0});
  pmoe_error err{};
  REQUIRE(st.submit(reqs, &err) == PMOE_OK);
  const auto done = st.poll_all(reqs.size());
  REQUIRE(done.size() == reqs.size());
  for (size_t k = 0; k < done.size(); ++k) {
    const uint64_t prio = k / 16, nth = k % 16;
    CHECK(done[k].user_data == nth * 4 + (3 - prio));
  }
  CHECK(std::memcmp(buf.data(), file.data.data(), buf.size()) == 0);
}

TEST_CASE("storage-uring: speculative reads leave room for a demand read") {
  REQUIRE_URING();
  DataFile file("reserve.bin", 16 << 20);
  // queue_depth 4: speculative reads hold at most 3 entries, so the demand read enters the ring
  // at once with at most 3 reads ahead of it.
  StorageInstance st(lib(), {{"queue_depth", "4"}});
  pmoe_file* f = st.must_open(file.path, PMOE_OPEN_DIRECT);
  CallbackSink sink;
  REQUIRE(st.set_callback(&CallbackSink::on_done, &sink) == PMOE_OK);
  DestArena arena;
  std::vector<pmoe_read_req> reqs;
  for (uint32_t i = 0; i < 120; ++i)
    reqs.push_back({f, i * 131072ull, 131072, arena.add(131072, 0), i, 3, 0});
  reqs.push_back({f, 5 * 4096, 4096, arena.add(4096, 0), 999, 0, 0});
  pmoe_error err{};
  REQUIRE(st.submit(reqs.data(), 120, &err) == PMOE_OK);
  const size_t before = sink.count();
  REQUIRE(st.submit(&reqs.back(), 1, &err) == PMOE_OK);
  const auto done = sink.wait(reqs.size());
  REQUIRE(done.size() == reqs.size());
  size_t pos = 0;
  while (done[pos].user_data != 999) ++pos;
  MESSAGE(before << " speculative reads done before the demand read came; it completed at " << pos);
  CHECK(pos <= before + 6);
  for (const auto& d : done) CHECK(d.status == PMOE_OK);
  REQUIRE(st.set_callback(nullptr, nullptr) == PMOE_OK);
}

TEST_CASE("storage-uring: long unaligned direct reads, more segments than queue entries") {
  REQUIRE_URING();
  DataFile file("long.bin", (8 << 20) + 777);
  for (const char* qd : {"1", "64"}) {
    CAPTURE(qd);
    StorageInstance st(lib(), {{"queue_depth", qd}});
    pmoe_file* f = st.must_open(file.path, PMOE_OPEN_DIRECT);
    DestArena arena;
    const uint64_t len = (5 << 20) + 333;
    const pmoe_read_req reqs[] = {
        {f, 1000, len, arena.add(len, 17), 1, 0, 0},                   // bounced in 1 MiB chunks
        {f, 4096 + 100, len, arena.add(len, 100), 2, 1, 0},            // head/tail bounced
        {f, file.data.size() - len, len, arena.add(len, 5), 3, 2, 0},  // ends at EOF
    };
    pmoe_error err{};
    REQUIRE(st.submit(reqs, 3, &err) == PMOE_OK);
    for (const auto& d : st.poll_all(3)) {
      CAPTURE(d.user_data);
      const pmoe_read_req& r = reqs[d.user_data - 1];
      CHECK(d.status == PMOE_OK);
      CHECK(d.bytes == len);
      CHECK(std::memcmp(r.dest, file.data.data() + r.offset, len) == 0);
    }
    CHECK(arena.guards_intact());
  }
}

TEST_CASE("storage-uring: reads outlive the threads that submitted them") {
  REQUIRE_URING();
  // io_uring ties a request to its submitting task; when that thread exits, work the kernel has
  // not started may be cancelled. The backend must retry it, not report it.
  DataFile file("exit.bin", 32 << 20);
  for (uint32_t flags : {0u, PMOE_OPEN_DIRECT}) {
    CAPTURE(flags);
    const int fd = ::open(file.path.c_str(), O_RDONLY);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // cold cache: buffered reads block too
    ::close(fd);
    StorageInstance st(lib(), {{"queue_depth", "256"}});
    pmoe_file* f = st.must_open(file.path, flags);
    CallbackSink sink;
    REQUIRE(st.set_callback(&CallbackSink::on_done, &sink) == PMOE_OK);
    DestArena arena;
    constexpr uint32_t kThreads = 8, kPer = 32;
    std::vector<pmoe_read_req> reqs;
    for (uint32_t i = 0; i < kThreads * kPer; ++i)
      reqs.push_back({f, i * 131072ull, 131072, arena.add(131072, 0), i, i % 2, 0});
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {  // submit and leave at once
        pmoe_error err{};
        CHECK(st.submit(reqs.data() + t * kPer, kPer, &err) == PMOE_OK);
      });
    for (auto& t : threads) t.join();
    const auto done = sink.wait(reqs.size());
    REQUIRE(done.size() == reqs.size());
    size_t bad = 0;
    for (const auto& d : done) {
      const pmoe_read_req& r = reqs[d.user_data];
      const bool ok =
          d.status == PMOE_OK && std::memcmp(r.dest, file.data.data() + r.offset, r.length) == 0;
      if (!ok && ++bad <= 3)
        MESSAGE("read " << d.user_data << ": " << pmoe_status_name(d.status) << " errno "
                        << d.sys_errno << " bytes " << d.bytes);
    }
    CHECK(bad == 0);
    REQUIRE(st.set_callback(nullptr, nullptr) == PMOE_OK);
  }
}

TEST_CASE("storage-uring: more open files than registered slots") {
  REQUIRE_URING();
  DataFile file("many.bin", 65536);
  StorageInstance st(lib());
  std::vector<pmoe_file*> files;
  for (int i = 0; i < 80; ++i)
    files.push_back(st.must_open(file.path, i % 2 ? PMOE_OPEN_DIRECT : 0));
  std::vector<uint8_t> buf(files.size() * 100);
  std::vector<pmoe_read_req> reqs;
  for (size_t i = 0; i < files.size(); ++i)
    reqs.push_back({files[i], i * 501, 100, buf.data() + i * 100, i, 0, 0});
  pmoe_error err{};
  REQUIRE(st.submit(reqs, &err) == PMOE_OK);
  for (const auto& d : st.poll_all(reqs.size())) CHECK(d.status == PMOE_OK);
  for (size_t i = 0; i < files.size(); ++i)
    CHECK(std::memcmp(buf.data() + i * 100, file.data.data() + i * 501, 100) == 0);
  for (size_t i = 0; i < 40; ++i) st.close(files[i]);  // slots come back for new files
  pmoe_file* g = st.must_open(file.path, 0);
  const pmoe_read_req r{g, 10, 100, buf.data(), 1, 0, 0};
  REQUIRE(st.submit(&r, 1, &err) == PMOE_OK);
  CHECK(st.poll_all(1).at(0).status == PMOE_OK);
  CHECK(std::memcmp(buf.data(), file.data.data() + 10, 100) == 0);
}

TEST_CASE("storage-uring: sqpoll") {
  REQUIRE_URING();
  std::string msg;
  if (try_create({{"sqpoll", "true"}}, &msg) != PMOE_OK) {
    CHECK_MESSAGE(has(msg, "sqpoll"), msg);
    MESSAGE("SQPOLL refused here: " << msg);
    return;
  }
  DataFile file("sqpoll.bin");
  StorageInstance st(lib(), {{"sqpoll", "true"}, {"queue_depth", "8"}});
  for (uint32_t flags : {0u, PMOE_OPEN_DIRECT}) {
    pmoe_file* f = st.must_open(file.path, flags);
    std::vector<uint8_t> buf(file.data.size());
    std::vector<pmoe_read_req> reqs;
    for (uint64_t off = 0; off < buf.size(); off += 10007)
      reqs.push_back(
          {f, off, std::min<uint64_t>(10007, buf.size() - off), buf.data() + off, off, 0, 0});
    pmoe_error err{};
    REQUIRE(st.submit(reqs, &err) == PMOE_OK);
    for (const auto& d : st.poll_all(reqs.size())) CHECK(d.status == PMOE_OK);
    CHECK(buf == file.data);
  }
}
