// mrd_stream_recon_cpp: a standalone Cartesian reconstruction, MRD stream in -> images out.
//
// Same conventions as the Python kernel (workers/cartesian.py): one unit per (slice,
// contrast, phase, set, repetition), closed on LAST_IN_SLICE or at the end of the stream;
// noise, calibration-only, navigator, phase-correction and other non-imaging lines skipped;
// lines placed at encode_step - limit_centre + extent / 2; averages averaged; centred
// orthonormal inverse FFT over k0, k1, k2 (FFTW, single precision; 2D and 3D); each axis
// fitted to the recon matrix (the image centre is cropped where the encoded matrix is larger,
// which removes readout oversampling; k-space is zero-padded where it is smaller);
// root-sum-of-squares over coils; float32 magnitude.  The output starts with the echoed
// header (and any TEXT that preceded it), images follow in the order their units closed,
// then CLOSE.
//
// A noise scan (IS_NOISE_MEASUREMENT lines before the imaging data) prewhitens every
// imaging line first, as the Python recon does (noise.hpp; --recon-option prewhiten=off
// turns it off).  Accelerated data (a header that declares parallel imaging, or
// calibration-only lines) and non-Cartesian trajectories are refused with one line: this
// recon would only zero-fill them.

#include <fftw3.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <complex>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "header_xml.hpp"
#include "image_meta.hpp"
#include "mrd_stream.hpp"
#include "noise.hpp"

namespace {

using cfloat = std::complex<float>;
const char* const kProg = "mrd_stream_recon_cpp";
constexpr double kMaxUnitBytes = 16.0 * (1 << 30);
constexpr double kDefaultReceiverBandwidth = 0.793;  // relativeReceiverNoiseBandwidth if none

constexpr uint64_t bit(int flag) { return uint64_t{1} << (flag - 1); }

// Flags that keep a line out of image k-space (noise, calibration-only, navigator,
// phase correction, feedback, dummy scans, coil-correction and stabilisation scans).
constexpr uint64_t kNotImaging = bit(19) | bit(20) | bit(23) | bit(24) | bit(26) | bit(27) |
                                 bit(28) | bit(29) | bit(30) | bit(31);

bool is_imaging(uint64_t flags) {
  uint64_t hits = flags & kNotImaging;
  if (hits == 0) return true;
  // Calibration-and-imaging lines are imaging data.
  return mrd::has_flag(flags, mrd::kIsParallelCalibrationAndImaging) &&
         hits == bit(mrd::kIsParallelCalibration);
}

// (encoding space, slice, contrast, phase, set, repetition) -- repetition is element 5.
using UnitKey = std::tuple<uint16_t, uint16_t, uint16_t, uint16_t, uint16_t, uint16_t>;

UnitKey key_of(const mrd::AcquisitionHeader& h) {
  return {h.encoding_space_ref, h.idx.slice, h.idx.contrast, h.idx.phase, h.idx.set,
          h.idx.repetition};
}

// One k-space volume, [coils][k2][k1][k0], with a per-line count for averaging.
struct Unit {
  int coils = 0;
  std::vector<cfloat> kspace;
  std::vector<uint16_t> counts;  // [k2][k1]
  mrd::AcquisitionHeader reference{};
  int reference_distance = -1;
};

class Recon {
 public:
  Recon(const mrd::Encoding& enc, mrd::Writer& out, mrd::Prewhitener whitener)
      : enc_(enc), out_(out), whitener_(std::move(whitener)) {
    k0n_ = enc.encoded_matrix[0];
    k1n_ = enc.encoded_matrix[1];
    k2n_ = enc.encoded_matrix[2];
  }

  ~Recon() {
    for (auto& entry : plans_) fftwf_destroy_plan(entry.second);
  }

  void add(mrd::Reader& in, const mrd::AcquisitionHeader& h) {
    const size_t samples = h.number_of_samples, channels = h.active_channels;
    const size_t traj = static_cast<size_t>(h.trajectory_dimensions) * samples;
    in.skip(traj * sizeof(float), "trajectory");
    if (channels * samples * sizeof(cfloat) > mrd::kMaxAcquisitionBytes) {
      in.fail("acquisition claims " + std::to_string(channels) + " channels x " +
              std::to_string(samples) + " samples: expected at most " +
              std::to_string(mrd::kMaxAcquisitionBytes) + " bytes (corrupt header?)");
    }
    line_.resize(channels * samples);
    in.read(line_.data(), line_.size() * sizeof(cfloat), "acquisition samples");
    if (mrd::has_flag(h.flags, mrd::kIsNoiseMeasurement)) {
      whitener_.add(h, line_.data());
      return;
    }
    if (mrd::has_flag(h.flags, mrd::kIsParallelCalibration) &&
        !mrd::has_flag(h.flags, mrd::kIsParallelCalibrationAndImaging)) {
      in.fail("a parallel-imaging calibration line: the data is accelerated, and this recon "
              "handles fully sampled data only and would zero-fill (use mrd_stream_recon, "
              "which runs GRAPPA)");
    }
    try {
      if (!whitener_.frozen()) {
        const std::string warning = whitener_.freeze(h);
        if (!warning.empty()) std::fprintf(stderr, "%s: warning: %s\n", kProg, warning.c_str());
      }
      if (coils_ == 0) coils_ = static_cast<int>(channels);
      if (is_imaging(h.flags)) {
        whitener_.apply(line_.data(), channels, samples);
        land(in, h);
      }
    } catch (const mrd::NoiseError& exc) {
      in.fail(exc.what());
    }
    apply_close_flags(h);
  }

  // Reconstruct the units still open at the end of the stream, oldest first.
  void finish() {
    while (!open_.empty()) close(open_.front().first);
  }

 private:
  Unit* find(const UnitKey& key) {
    for (auto& entry : open_) {
      if (entry.first == key) return &entry.second;
    }
    return nullptr;
  }

  void land(mrd::Reader& in, const mrd::AcquisitionHeader& h) {
    const size_t samples = h.number_of_samples, channels = h.active_channels;
    if (h.encoding_space_ref != 0) {
      in.fail("acquisition refers to encoding space " + std::to_string(h.encoding_space_ref) +
              ": expected 0 (this recon handles one encoding space)");
    }
    int k1 = h.idx.kspace_encode_step_1 + k1n_ / 2 - enc_.k1.center;
    int k2 = h.idx.kspace_encode_step_2 + k2n_ / 2 - enc_.k2.center;
    if (k1 < 0 || k1 >= k1n_ || k2 < 0 || k2 >= k2n_) {
      in.fail("kspace_encode_step_1/2 = " + std::to_string(h.idx.kspace_encode_step_1) + "/" +
              std::to_string(h.idx.kspace_encode_step_2) + " lands outside the " +
              std::to_string(k1n_) + "x" + std::to_string(k2n_) +
              " encoded k-space (check the header's encoding limits)");
    }
    int start = 0;
    if (static_cast<int>(samples) != k0n_) {
      start = k0n_ / 2 - h.center_sample;
      if (start < 0 || start + static_cast<int>(samples) > k0n_) {
        in.fail("a readout of " + std::to_string(samples) + " samples with center_sample " +
                std::to_string(h.center_sample) + " does not fit " + std::to_string(k0n_) +
                " readout points");
      }
    }
    if (static_cast<size_t>(coils_) != channels) {
      in.fail("acquisition has " + std::to_string(channels) + " active channels: expected " +
              std::to_string(coils_) + " like the first acquisition (the coil count may not "
              "change within a stream)");
    }
    UnitKey key = key_of(h);
    Unit* found = find(key);
    if (found == nullptr) {
      const double bytes = 8.0 * channels * k2n_ * k1n_ * k0n_;
      if (bytes > kMaxUnitBytes) {
        char size[32];
        std::snprintf(size, sizeof size, "%.3g", bytes / (1 << 30));
        in.fail(std::string("one slice of k-space would need ") + size + " GiB (" + std::to_string(channels) + " coils, encoded matrix " +
                std::to_string(k0n_) + "x" + std::to_string(k1n_) + "x" + std::to_string(k2n_) +
                "): expected at most 16 GiB (corrupt header?)");
      }
      open_.emplace_back(key, Unit());
      found = &open_.back().second;
      found->coils = coils_;
      found->kspace.assign(channels * k2n_ * k1n_ * k0n_, cfloat(0.0f, 0.0f));
      found->counts.assign(static_cast<size_t>(k2n_) * k1n_, 0);
    }
    Unit& unit = *found;
    const bool reverse = mrd::has_flag(h.flags, mrd::kIsReverse);
    const size_t line = static_cast<size_t>(k2) * k1n_ + k1;
    for (size_t c = 0; c < channels; ++c) {
      cfloat* dst = &unit.kspace[(c * k2n_ * k1n_ + line) * k0n_ + start];
      const cfloat* src = &line_[c * samples];
      for (size_t s = 0; s < samples; ++s) dst[s] += src[reverse ? samples - 1 - s : s];
    }
    unit.counts[line] += 1;
    int distance = std::abs(h.idx.kspace_encode_step_1 - enc_.k1.center) +
                   std::abs(h.idx.kspace_encode_step_2 - enc_.k2.center);
    if (unit.reference_distance < 0 || distance < unit.reference_distance) {
      unit.reference = h;
      unit.reference_distance = distance;
    }
  }

  // LAST_IN_SLICE closes the line's unit; LAST_IN_MEASUREMENT closes every open unit and
  // LAST_IN_REPETITION those of its repetition, oldest first.  Non-imaging lines count too.
  void apply_close_flags(const mrd::AcquisitionHeader& h) {
    if (mrd::has_flag(h.flags, mrd::kLastInSlice)) close(key_of(h));
    if (mrd::has_flag(h.flags, mrd::kLastInMeasurement)) {
      finish();
    } else if (mrd::has_flag(h.flags, mrd::kLastInRepetition)) {
      std::vector<UnitKey> keys;
      for (const auto& entry : open_) {
        if (std::get<5>(entry.first) == h.idx.repetition) keys.push_back(entry.first);
      }
      for (const auto& key : keys) close(key);
    }
  }

  fftwf_plan plan_for(int coils, const std::array<int, 3>& grid, fftwf_complex* buffer) {
    const auto key = std::make_tuple(coils, grid[0], grid[1], grid[2]);
    auto found = plans_.find(key);
    if (found != plans_.end()) return found->second;
    int n[3] = {grid[2], grid[1], grid[0]};
    const int size = grid[0] * grid[1] * grid[2];
    fftwf_plan plan = fftwf_plan_many_dft(3, n, coils, buffer, nullptr, 1, size, buffer, nullptr,
                                          1, size, FFTW_BACKWARD, FFTW_ESTIMATE | FFTW_UNALIGNED);
    plans_.emplace(key, plan);
    return plan;
  }

  // out[i] = in[(i + shift) mod n] along each axis of a [coils][n2][n1][n0] block.
  void roll(std::vector<cfloat>& data, int coils, const std::array<int, 3>& n,
            const std::array<int, 3>& shift) {
    scratch_.resize(data.size());
    for (int c = 0; c < coils; ++c) {
      for (int i2 = 0; i2 < n[2]; ++i2) {
        const int j2 = (i2 + shift[2]) % n[2];
        for (int i1 = 0; i1 < n[1]; ++i1) {
          const int j1 = (i1 + shift[1]) % n[1];
          const cfloat* src = &data[((static_cast<size_t>(c) * n[2] + j2) * n[1] + j1) * n[0]];
          cfloat* dst = &scratch_[((static_cast<size_t>(c) * n[2] + i2) * n[1] + i1) * n[0]];
          for (int i0 = 0; i0 < n[0]; ++i0) dst[i0] = src[(i0 + shift[0]) % n[0]];
        }
      }
    }
    data.swap(scratch_);
  }

  // Average repeated lines and copy k-space into the transform grid: each axis is the
  // larger of the encoded and recon sizes, k-space zero-padded around its centre.
  std::vector<cfloat> to_grid(Unit& unit, const std::array<int, 3>& grid) {
    const std::array<int, 3> enc = {k0n_, k1n_, k2n_};
    std::array<int, 3> before{};
    for (int a = 0; a < 3; ++a) before[a] = grid[a] / 2 - enc[a] / 2;
    std::vector<cfloat> out(static_cast<size_t>(unit.coils) * grid[0] * grid[1] * grid[2]);
    for (int c = 0; c < unit.coils; ++c) {
      for (int k2 = 0; k2 < k2n_; ++k2) {
        for (int k1 = 0; k1 < k1n_; ++k1) {
          const size_t line = static_cast<size_t>(k2) * k1n_ + k1;
          const cfloat* src = &unit.kspace[(c * static_cast<size_t>(k2n_) * k1n_ + line) * k0n_];
          cfloat* dst = &out[((static_cast<size_t>(c) * grid[2] + k2 + before[2]) * grid[1] + k1 +
                              before[1]) * grid[0] + before[0]];
          const uint16_t count = unit.counts[line];
          for (int k0 = 0; k0 < k0n_; ++k0) {
            dst[k0] = count > 1 ? src[k0] / static_cast<float>(count) : src[k0];
          }
        }
      }
    }
    return out;
  }

  void close(const UnitKey& key) {
    auto found = open_.begin();
    while (found != open_.end() && !(found->first == key)) ++found;
    if (found == open_.end()) return;
    Unit unit = std::move(found->second);
    open_.erase(found);
    const int coils = unit.coils;
    const std::array<int, 3> recon = enc_.recon_matrix;
    const std::array<int, 3> grid = {std::max(k0n_, recon[0]), std::max(k1n_, recon[1]),
                                     std::max(k2n_, recon[2])};
    std::vector<cfloat> data = to_grid(unit, grid);
    unit.kspace.clear();
    // Centred transform: ifftshift, inverse FFT, fftshift.
    roll(data, coils, grid, {grid[0] / 2, grid[1] / 2, grid[2] / 2});
    auto* buffer = reinterpret_cast<fftwf_complex*>(data.data());
    fftwf_execute_dft(plan_for(coils, grid, buffer), buffer, buffer);
    roll(data, coils, grid, {grid[0] - grid[0] / 2, grid[1] - grid[1] / 2, grid[2] - grid[2] / 2});
    const float norm = 1.0f / std::sqrt(static_cast<float>(grid[0]) * grid[1] * grid[2]);
    // Keep the centre of the field of view (this removes readout oversampling).
    std::array<int, 3> start{};
    for (int a = 0; a < 3; ++a) start[a] = grid[a] / 2 - recon[a] / 2;
    std::vector<float> image(static_cast<size_t>(recon[0]) * recon[1] * recon[2], 0.0f);
    for (int c = 0; c < coils; ++c) {
      for (int z = 0; z < recon[2]; ++z) {
        for (int y = 0; y < recon[1]; ++y) {
          const cfloat* src = &data[((static_cast<size_t>(c) * grid[2] + z + start[2]) * grid[1] +
                                     y + start[1]) * grid[0] + start[0]];
          float* dst = &image[(static_cast<size_t>(z) * recon[1] + y) * recon[0]];
          for (int x = 0; x < recon[0]; ++x) {
            const cfloat v = src[x] * norm;
            dst[x] += v.real() * v.real() + v.imag() * v.imag();
          }
        }
      }
    }
    float top = 0.0f;
    for (float& v : image) {
      v = std::sqrt(v);
      top = std::max(top, v);
    }
    mrd::ImageHeader head = mrd::image_header(unit.reference, enc_, recon);
    head.image_index = static_cast<uint16_t>(++images_);
    out_.write_image(head, mrd::image_attributes(head, top), image.data(), image.size());
  }

  mrd::Encoding enc_;
  mrd::Writer& out_;
  mrd::Prewhitener whitener_;
  int k0n_ = 0, k1n_ = 0, k2n_ = 0;
  int images_ = 0;
  int coils_ = 0;
  std::vector<std::pair<UnitKey, Unit>> open_;  // open units, oldest first
  std::map<std::tuple<int, int, int, int>, fftwf_plan> plans_;
  std::vector<cfloat> line_, scratch_;
};

int run(bool prewhiten) {
  mrd::Reader in(stdin);
  mrd::Writer out(stdout);
  std::unique_ptr<Recon> recon;
  std::vector<std::string> early_texts;
  uint16_t id = 0;
  while (true) {
    if (!in.next_id(&id)) {
      in.fail("the stream ended without a CLOSE message (the sender stopped early or the "
              "connection dropped)");
    }
    constexpr uint16_t kYardlMagic = 0x6179;  // "ya": how an MRD v2 (yardl) stream starts
    if (id == kYardlMagic && in.index() == 0) {
      in.fail("this is an MRD v2 (yardl) stream: this C++ recon reads MRD v1 (ISMRMRD); "
              "use mrd_stream_recon, which reads both, or convert it first with "
              "parallel-recon convert - - --to ismrmrd");
    }
    if (id == mrd::kClose) break;
    switch (id) {
      case mrd::kConfigFile:
        in.skip(mrd::kConfigFileSize, "CONFIG_FILE name");
        break;
      case mrd::kConfigText:
        in.read_string("CONFIG_TEXT");
        break;
      case mrd::kText:  // passed through; those before the header follow it
        if (recon) {
          out.write_text(in.read_string("TEXT"));
        } else {
          early_texts.push_back(in.read_string("TEXT"));
        }
        break;
      case mrd::kHeader: {
        if (recon) in.fail("a second HEADER message: expected one header per stream");
        std::string xml = in.read_string("HEADER");
        try {
          const mrd::Prewhitener whitener(
              prewhiten, mrd::receiver_noise_bandwidth(xml, kDefaultReceiverBandwidth));
          recon = std::make_unique<Recon>(mrd::parse_encoding(xml), out, whitener);
        } catch (const mrd::HeaderError& exc) {
          in.fail(exc.what());
        }
        out.write_header(xml);
        for (const auto& text : early_texts) out.write_text(text);
        early_texts.clear();
        break;
      }
      case mrd::kAcquisition: {
        auto head = in.read_value<mrd::AcquisitionHeader>("AcquisitionHeader");
        if (!recon) in.fail("an ACQUISITION before the HEADER: expected the XML header first");
        recon->add(in, head);
        break;
      }
      case mrd::kImage:  // not reconstructed; consumed and dropped
        in.skip_image();
        break;
      case mrd::kWaveform:
        in.skip_waveform();
        break;
      case mrd::kNdArray:
        in.skip_ndarray();
        break;
      default:
        in.fail("unknown message id " + std::to_string(id) +
                ": expected 1-5 (config, header, close, text), 1008 (acquisition), "
                "1022 (image), 1026 (waveform) or 1030 (ndarray)");
    }
    in.finish_message();
  }
  if (!recon) in.fail("the stream has no HEADER message: expected the XML header first");
  recon->finish();
  out.write_close();
  if (in.data_after_close()) {  // reading stops at CLOSE, as in every parallel-recon command
    std::fprintf(stderr,
                 "%s: warning: ignored data after the CLOSE message (at byte offset %llu, "
                 "message index %llu): reading stops at CLOSE\n",
                 kProg, static_cast<unsigned long long>(in.offset()),
                 static_cast<unsigned long long>(in.index() + 1));
  }
  return 0;
}

void usage() {
  std::printf(
      "usage: %s [-h] [--recon-option prewhiten=on|off]\n\n"
      "Cartesian MRD reconstruction: reads an MRD v1 stream on stdin, writes the header\n"
      "and one float32 magnitude image per slice/contrast/phase/set/repetition on stdout.\n"
      "A noise scan in the stream prewhitens the coils first (prewhiten=off: not).\n"
      "Accelerated and non-Cartesian data are refused (use mrd_stream_recon).\n",
      kProg);
}

int usage_error(const std::string& problem) {
  std::fprintf(stderr, "%s: error: %s (try --help)\n", kProg, problem.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bool prewhiten = true;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage();
      return 0;
    }
    std::string option;
    if (arg == "--recon-option") {
      if (i + 1 >= argc) return usage_error("--recon-option needs KEY=VALUE");
      option = argv[++i];
    } else if (arg.rfind("--recon-option=", 0) == 0) {
      option = arg.substr(std::strlen("--recon-option="));
    } else {
      return usage_error("unknown argument '" + arg + "'");
    }
    if (option == "prewhiten=on" || option == "prewhiten=off") {
      prewhiten = option == "prewhiten=on";
    } else {
      return usage_error("--recon-option '" + option + "': expected prewhiten=on or prewhiten=off");
    }
  }
  std::signal(SIGPIPE, SIG_IGN);
  static char in_buffer[1 << 20], out_buffer[1 << 20];
  std::setvbuf(stdin, in_buffer, _IOFBF, sizeof in_buffer);
  std::setvbuf(stdout, out_buffer, _IOFBF, sizeof out_buffer);
  try {
    return run(prewhiten);
  } catch (const mrd::StreamError& exc) {
    std::fprintf(stderr, "%s: error: %s\n", kProg, exc.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: error: out of memory (is the header's matrix size sane?)\n", kProg);
  } catch (const std::runtime_error& exc) {
    if (errno == EPIPE) return 141;  // downstream closed: quiet, like cat
    std::fprintf(stderr, "%s: error: %s\n", kProg, exc.what());
  }
  return 1;
}
