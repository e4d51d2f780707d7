// What the reconstruction needs from the ISMRMRD XML header, found without an XML library.
//
// The header is machine-written (ismrmrd.xsd), so locating nested elements by their tag
// names inside the first <encoding> is enough; a missing required element is an error that
// names the element.
#pragma once

#include <array>
#include <stdexcept>
#include <string>

namespace mrd {

struct Limits {
  int minimum = 0, maximum = 0, center = 0;
};

struct Encoding {
  std::array<int, 3> encoded_matrix{};  // x (readout, oversampling included), y, z
  std::array<int, 3> recon_matrix{};
  std::array<float, 3> encoded_fov{};
  std::array<float, 3> recon_fov{};
  Limits k1, k2;
};

class HeaderError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

struct Span {
  size_t begin = std::string::npos, end = std::string::npos;
  bool found() const { return begin != std::string::npos; }
};

// Content of the first <tag>...</tag> inside [within.begin, within.end).
inline Span element(const std::string& xml, Span within, const std::string& tag) {
  const std::string open = "<" + tag + ">", close = "</" + tag + ">";
  size_t start = xml.find(open, within.begin);
  if (start == std::string::npos || start >= within.end) return {};
  size_t stop = xml.find(close, start);
  if (stop == std::string::npos || stop > within.end) return {};
  return {start + open.size(), stop};
}

inline Span require(const std::string& xml, Span within, const std::string& path) {
  Span span = within;
  size_t from = 0;
  while (from <= path.size()) {
    size_t slash = path.find('/', from);
    std::string tag = path.substr(from, slash == std::string::npos ? std::string::npos : slash - from);
    span = element(xml, span, tag);
    if (!span.found()) {
      throw HeaderError("the XML header has no <" + path + "> element: expected a Cartesian "
                        "encoding with matrix sizes and fields of view");
    }
    if (slash == std::string::npos) break;
    from = slash + 1;
  }
  return span;
}

inline double number(const std::string& xml, Span span, const std::string& what) {
  std::string text = xml.substr(span.begin, span.end - span.begin);
  try {
    size_t used = 0;
    double value = std::stod(text, &used);
    return value;
  } catch (const std::exception&) {
    throw HeaderError("the XML header's <" + what + "> is '" + text + "': expected a number");
  }
}

template <typename T>
std::array<T, 3> xyz(const std::string& xml, Span within, const std::string& path) {
  Span block = require(xml, within, path);
  std::array<T, 3> out{};
  const char* axes[3] = {"x", "y", "z"};
  for (int i = 0; i < 3; ++i) {
    out[i] = static_cast<T>(number(xml, require(xml, block, axes[i]), path + "/" + axes[i]));
  }
  return out;
}

inline Limits limits(const std::string& xml, Span within, const std::string& name,
                     int extent) {
  Limits out;
  Span block = element(xml, element(xml, within, "encodingLimits"), name);
  if (!block.found()) {  // no limits: the whole extent, centred
    out.maximum = extent - 1;
    out.center = extent / 2;
    return out;
  }
  auto field = [&](const char* tag, int fallback) {
    Span s = element(xml, block, tag);
    return s.found() ? static_cast<int>(number(xml, s, name + "/" + tag)) : fallback;
  };
  out.minimum = field("minimum", 0);
  out.maximum = field("maximum", extent - 1);
  out.center = field("center", extent / 2);
  return out;
}

// Accelerated data would be zero-filled (aliased images): refused with the tool that can.
inline void refuse_acceleration(const std::string& xml, Span encoding) {
  Span factor = element(xml, element(xml, encoding, "parallelImaging"), "accelerationFactor");
  if (!factor.found()) return;
  int r[2] = {1, 1};
  const char* tags[2] = {"kspace_encoding_step_1", "kspace_encoding_step_2"};
  for (int i = 0; i < 2; ++i) {
    Span value = element(xml, factor, tags[i]);
    if (value.found()) r[i] = static_cast<int>(number(xml, value, std::string("accelerationFactor/") + tags[i]));
  }
  if (r[0] > 1 || r[1] > 1) {
    throw HeaderError("the XML header declares parallel imaging (acceleration " +
                      std::to_string(r[0]) + " x " + std::to_string(r[1]) +
                      "): this recon handles fully sampled data only and would zero-fill "
                      "(use mrd_stream_recon, which runs GRAPPA)");
  }
}

}  // namespace detail

// <acquisitionSystemInformation><relativeReceiverNoiseBandwidth>, or ``fallback``.
inline double receiver_noise_bandwidth(const std::string& xml, double fallback) {
  using namespace detail;
  Span value = element(xml, element(xml, Span{0, xml.size()}, "acquisitionSystemInformation"),
                       "relativeReceiverNoiseBandwidth");
  if (!value.found()) return fallback;
  const double found = number(xml, value, "relativeReceiverNoiseBandwidth");
  return found > 0.0 ? found : fallback;
}

// The first <encoding> of the header.
inline Encoding parse_encoding(const std::string& xml) {
  using namespace detail;
  Span all{0, xml.size()};
  Span encoding = require(xml, all, "encoding");
  Span trajectory = element(xml, encoding, "trajectory");
  if (trajectory.found()) {
    std::string kind = xml.substr(trajectory.begin, trajectory.end - trajectory.begin);
    if (kind != "cartesian") {
      throw HeaderError("the XML header's trajectory is '" + kind +
                        "': this recon handles Cartesian data only (use mrd_stream_recon)");
    }
  }
  refuse_acceleration(xml, encoding);
  Encoding out;
  out.encoded_matrix = xyz<int>(xml, encoding, "encodedSpace/matrixSize");
  out.recon_matrix = xyz<int>(xml, encoding, "reconSpace/matrixSize");
  out.encoded_fov = xyz<float>(xml, encoding, "encodedSpace/fieldOfView_mm");
  out.recon_fov = xyz<float>(xml, encoding, "reconSpace/fieldOfView_mm");
  for (int i = 0; i < 3; ++i) {
    if (out.encoded_matrix[i] < 1 || out.recon_matrix[i] < 1 ||
        out.encoded_matrix[i] > 65535 || out.recon_matrix[i] > 65535) {
      throw HeaderError("the XML header's matrix sizes must be 1..65535: found encoded " +
                        std::to_string(out.encoded_matrix[i]) + ", recon " +
                        std::to_string(out.recon_matrix[i]));
    }
  }
  out.k1 = limits(xml, encoding, "kspace_encoding_step_1", out.encoded_matrix[1]);
  out.k2 = limits(xml, encoding, "kspace_encoding_step_2", out.encoded_matrix[2]);
  return out;
}

}  // namespace mrd
