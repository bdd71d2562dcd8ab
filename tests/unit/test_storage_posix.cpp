// storage-posix specifics the conformance suite cannot know: options, the O_DIRECT fallback,
// exact messages and queue order. The generic contract (draining on close, EINTR, ...) is checked
// by tests/conformance (ctest: storage_conformance_posix*).
#include <doctest/doctest.h>

#include "../conformance/storage_conformance.hpp"

#include <sys/stat.h>


using namespace pmoe::conformance;

namespace {

const StorageLibrary& lib() {
  static const StorageLibrary l(PMOE_BUILD_DIR "/lib/pocketmoe/libstorage-posix.so",
                                "storage-posix");
  return l;
}

// A 1 MiB + 300 file on the build tree's disk (real O_DIRECT, unlike tmpfs).
struct DataFile {
  std::string path;
  std::vector<uint8_t> data;
  explicit DataFile(const std::string& name, size_t size = (1 << 20) + 300) {
    const std::string dir = PMOE_BUILD_DIR "/tests/storage-posix-data";
    std::filesystem::create_directories(dir);
    path = dir + "/" + std::to_string(::getpid()) + "-" + name;
    data = make_content(size, 42);
    write_file(path, data);
  }
  ~DataFile() { std::remove(path.c_str()); }
};

pmoe_status create_status(const OptionList& o, std::string* msg = nullptr) {
  try {
    StorageInstance s(lib(), o);
    return PMOE_OK;
  } catch (const std::exception& e) {
    if (msg) *msg = e.what();
    return PMOE_ERR_INVALID_ARGUMENT;
  }
}

bool has(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("storage-posix: options are checked") {
  CHECK(create_status({{"workers", "1"}}) == PMOE_OK);
  CHECK(create_status({{"workers", "256"}, {"direct_io", "true"}}) == PMOE_OK);
  std::string msg;
  CHECK(create_status({{"workers", "0"}}, &msg) != PMOE_OK);
  CHECK_MESSAGE(has(msg, "'workers' must be 1..256, got 0"), msg);
  CHECK(create_status({{"workers", "many"}}, &msg) != PMOE_OK);
  CHECK(has(msg, "workers"));
  CHECK(create_status({{"direct_io", "maybe"}}, &msg) != PMOE_OK);
  CHECK(has(msg, "direct_io"));
}

TEST_CASE("storage-posix: O_DIRECT refused by the filesystem") {
  const std::string proc = "/proc/self/status";  // procfs refuses O_DIRECT with EINVAL
  SUBCASE("falls back to buffered reads with a warning") {
    lib().log().clear();
    StorageInstance st(lib());
    pmoe_file* f = st.must_open(proc, PMOE_OPEN_DIRECT);
    CHECK(st.direct_alignment(f) == 1);
    CHECK(lib().log().contains("warn storage-posix: filesystem of '" + proc +
                               "' does not support direct I/O"));
  }
  SUBCASE("or fails when direct_io_fallback is false") {
    StorageInstance st(lib(), {{"direct_io_fallback", "false"}});
    const auto r = st.open(proc, PMOE_OPEN_DIRECT);
    CHECK(r.status == PMOE_ERR_NOT_SUPPORTED);
    CHECK_MESSAGE(has(r.err.message, "'" + proc + "' does not support direct I/O"),
                  std::string(r.err.message));
    CHECK(st.open(proc, 0).status == PMOE_OK);  // buffered opens are unaffected
  }
}

TEST_CASE("storage-posix: direct_io applies O_DIRECT to every open; alignment from statx") {
  DataFile file("align.bin");
  StorageInstance plain(lib());
  StorageInstance forced(lib(), {{"direct_io", "true"}});
  CHECK(plain.direct_alignment(plain.must_open(file.path, 0)) == 1);
  const uint32_t a = forced.direct_alignment(forced.must_open(file.path, 0));
  CHECK(a == plain.direct_alignment(plain.must_open(file.path, PMOE_OPEN_DIRECT)));
  struct statx sx {};
  if (::statx(AT_FDCWD, file.path.c_str(), 0, STATX_DIOALIGN, &sx) == 0 &&
      (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
    CHECK(a == std::max(sx.stx_dio_offset_align, sx.stx_dio_mem_align));
  } else {
    MESSAGE("no STATX_DIOALIGN here; alignment " << a);
  }
}

TEST_CASE("storage-posix: error messages name the path and the numbers") {
  DataFile file("msg.bin", 10000);
  StorageInstance st(lib());
  const std::string missing = file.path + ".missing";
  auto r = st.open(missing, 0);
  CHECK(r.status == PMOE_ERR_NOT_FOUND);
  CHECK(r.err.sys_errno == ENOENT);
  CHECK(std::string(r.err.message) == "cannot open '" + missing + "': No such file or directory");

  r = st.open(PMOE_BUILD_DIR, 0);
  CHECK(r.status == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(has(r.err.message, "not a regular file"));

  pmoe_file* f = st.must_open(file.path, 0);
  uint8_t buf[64];
  const pmoe_read_req reqs[] = {{f, 0, 8, buf, 0, 0, 0}, {f, 9990, 20, buf, 1, 0, 0}};
  pmoe_error err{};
  CHECK(st.submit(reqs, 2, &err) == PMOE_ERR_OUT_OF_RANGE);
  CHECK(std::string(err.message) == "request 1: read past end of file '" + file.path +
                                        "': offset 9990 length 20 file size 10000");

  st.close(f);  // a closed file is no longer accepted
  CHECK(st.submit(reqs, 1, &err) == PMOE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(err.message) == "request 0: file is not open");
}

TEST_CASE("storage-posix: a file truncated under us logs the short read") {
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

TEST_CASE("storage-posix: one worker serves by priority, FIFO within a priority") {
  DataFile file("order.bin");
  StorageInstance st(lib(), {{"workers", "1"}});
  pmoe_file* f = st.must_open(file.path, 0);
  std::vector<uint8_t> buf(64 * 4096);
  std::vector<pmoe_read_req> reqs;
  for (uint32_t i = 0; i < 64; ++i)  // priorities 3,2,1,0,3,2,... in submission order
    reqs.push_back({f, i * 4096ull, 4096, buf.data() + i * 4096, i, 3 - i % 4, 0});
  pmoe_error err{};
  REQUIRE(st.submit(reqs, &err) == PMOE_OK);
  const auto done = st.poll_all(reqs.size());
  REQUIRE(done.size() == reqs.size());
  // The batch is queued under one lock before the worker looks, so the order is exact.
  for (size_t k = 0; k < done.size(); ++k) {
    const uint64_t prio = k / 16, nth = k % 16;
    CHECK(done[k].user_data == nth * 4 + (3 - prio));
  }
  CHECK(std::memcmp(buf.data(), file.data.data(), buf.size()) == 0);
}
