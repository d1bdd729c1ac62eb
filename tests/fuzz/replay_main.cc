// Runs the fuzz target without libFuzzer, so that it builds and runs with any compiler:
// each file named on the command line (or every file in a named directory) is fed to
// LLVMFuzzerTestOneInput, then every prefix of it and every one-byte corruption of it,
// which walks each seed through the decoder's rejection paths deterministically.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

bool ReadFile(const fs::path& path, std::vector<uint8_t>& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return true;
}

// Variants cost quadratic time; beyond this size (twice the largest message) an input is
// only run as it is.
constexpr size_t kMaxVariantInput = 1024;

// Returns how many inputs were run.
size_t ReplayWithVariants(const std::vector<uint8_t>& seed) {
  size_t runs = 0;
  LLVMFuzzerTestOneInput(seed.data(), seed.size());
  ++runs;
  if (seed.size() > kMaxVariantInput) return runs;
  for (size_t n = 0; n < seed.size(); ++n) {
    LLVMFuzzerTestOneInput(seed.data(), n);
    ++runs;
  }
  std::vector<uint8_t> v = seed;
  for (size_t i = 0; i < v.size(); ++i) {
    for (uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
      v[i] ^= flip;
      LLVMFuzzerTestOneInput(v.data(), v.size());
      v[i] ^= flip;
      ++runs;
    }
  }
  return runs;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    if (fs::is_directory(argv[i], ec)) {
      for (const auto& e : fs::directory_iterator(argv[i])) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
    } else {
      files.emplace_back(argv[i]);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR...: no inputs given\n", argv[0]);
    return 2;
  }
  size_t runs = 0;
  for (const auto& path : files) {
    std::vector<uint8_t> seed;
    if (!ReadFile(path, seed)) {
      std::fprintf(stderr, "cannot read %s\n", path.c_str());
      return 1;
    }
    runs += ReplayWithVariants(seed);
  }
  std::printf("replayed %zu seeds as %zu inputs: no property violated\n", files.size(), runs);
  return 0;
}
