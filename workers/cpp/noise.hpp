// Coil noise prewhitening, as the Python recon does it (workers/noise.py).
//
// The covariance of the IS_NOISE_MEASUREMENT lines that precede the imaging data is scaled
// to the imaging lines' bandwidth, C = C_noise * t_noise / (t_acquisition * rnb) (Gadgetron's
// noise adjustment: rnb is the header's relativeReceiverNoiseBandwidth, 0.793 by default),
// factored C = L L^H (Cholesky) and every imaging line's coil vector is multiplied by
// W = L^-1, so that the noise of the image is independent and of unit variance per coil
// before the root-sum-of-squares.  The covariance is frozen at the first line that is not
// noise; noise lines after it are not used.
#pragma once

#include <cmath>
#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "mrd_stream.hpp"

namespace mrd {

class NoiseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Prewhitener {
 public:
  using cdouble = std::complex<double>;
  using cfloat = std::complex<float>;

  static constexpr double kRegularisation = 1e-6;  // diagonal loading, relative to mean variance

  explicit Prewhitener(bool enabled, double receiver_bandwidth)
      : enabled_(enabled), receiver_bandwidth_(receiver_bandwidth) {}

  bool frozen() const { return frozen_; }
  bool active() const { return !matrix_.empty(); }

  // One noise line, [channels][samples]; lines after the freeze or with another channel
  // count than the first are not used.
  void add(const AcquisitionHeader& h, const cfloat* data) {
    if (frozen_) return;
    const size_t n = h.active_channels, samples = h.number_of_samples;
    if (channels_ == 0) {
      channels_ = n;
      dwell_us_ = h.sample_time_us;
      std::copy(std::begin(h.channel_mask), std::end(h.channel_mask), mask_);
      sum_.assign(n * n, cdouble(0.0, 0.0));
    } else if (n != channels_) {
      return;
    }
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j <= i; ++j) {
        cdouble acc(0.0, 0.0);
        const cfloat* a = data + i * samples;
        const cfloat* b = data + j * samples;
        for (size_t s = 0; s < samples; ++s) {
          acc += cdouble(a[s]) * std::conj(cdouble(b[s]));
        }
        sum_[i * n + j] += acc;
      }
    }
    samples_ += samples;
  }

  // At the first line that is not noise: derive W for its channels.  Returns a warning for
  // the user ("" when there is none); throws NoiseError when the noise cannot be used.
  std::string freeze(const AcquisitionHeader& h) {
    frozen_ = true;
    if (channels_ == 0 || samples_ == 0) return "";
    const size_t n = channels_;
    std::vector<cdouble> cov(n * n);
    bool nonzero = false;
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j <= i; ++j) {
        cov[i * n + j] = sum_[i * n + j] / static_cast<double>(samples_);
        cov[j * n + i] = std::conj(cov[i * n + j]);
        nonzero = nonzero || std::abs(cov[i * n + j]) > 0.0;
      }
    }
    if (!nonzero) return "the noise scan holds only zeros: no prewhitening";
    if (!enabled_) return "";
    const std::vector<size_t> order = channel_order(h);
    const size_t m = order.size();
    const double scale = bandwidth_scale(h.sample_time_us);
    std::vector<cdouble> picked(m * m);
    for (size_t i = 0; i < m; ++i) {
      for (size_t j = 0; j < m; ++j) picked[i * m + j] = cov[order[i] * n + order[j]] * scale;
    }
    matrix_ = inverse_cholesky(picked, m);
    matrix_channels_ = m;
    return "";
  }

  // line[c][s] <- sum_k W[c][k] line[k][s] (W is lower triangular).
  void apply(cfloat* line, size_t channels, size_t samples) {
    if (matrix_.empty()) return;
    if (channels != matrix_channels_) {
      throw NoiseError("an imaging line has " + std::to_string(channels) +
                       " channels, the prewhitening was made for " +
                       std::to_string(matrix_channels_));
    }
    out_.assign(channels * samples, cfloat(0.0f, 0.0f));
    for (size_t c = 0; c < channels; ++c) {
      cfloat* dst = &out_[c * samples];
      for (size_t k = 0; k <= c; ++k) {
        const cfloat w = matrix_[c * channels + k];
        const cfloat* src = line + k * samples;
        for (size_t s = 0; s < samples; ++s) dst[s] += w * src[s];
      }
    }
    std::copy(out_.begin(), out_.end(), line);
  }

 private:
  double bandwidth_scale(float acquisition_dwell_us) const {
    if (dwell_us_ <= 0.0f || acquisition_dwell_us <= 0.0f || receiver_bandwidth_ <= 0.0) {
      return 1.0;
    }
    return static_cast<double>(dwell_us_) /
           (static_cast<double>(acquisition_dwell_us) * receiver_bandwidth_);
  }

  static std::vector<size_t> mask_bits(const uint64_t* mask) {
    std::vector<size_t> bits;
    for (size_t i = 0; i < 64 * 16; ++i) {
      if ((mask[i / 64] >> (i % 64)) & 1u) bits.push_back(i);
    }
    return bits;
  }

  // Which noise channel each imaging channel is: by the channel masks when both say, else
  // one to one when the counts agree.
  std::vector<size_t> channel_order(const AcquisitionHeader& h) const {
    const size_t imaging = h.active_channels;
    const std::vector<size_t> noise_bits = mask_bits(mask_), imaging_bits = mask_bits(h.channel_mask);
    if (noise_bits.size() == channels_ && imaging_bits.size() == imaging) {
      std::vector<size_t> order;
      for (size_t bit : imaging_bits) {
        for (size_t i = 0; i < noise_bits.size(); ++i) {
          if (noise_bits[i] == bit) order.push_back(i);
        }
      }
      if (order.size() == imaging) return order;
    } else if (channels_ == imaging) {
      std::vector<size_t> order(imaging);
      for (size_t i = 0; i < imaging; ++i) order[i] = i;
      return order;
    }
    throw NoiseError("the noise scan has " + std::to_string(channels_) +
                     " channels and the imaging lines " + std::to_string(imaging) +
                     ", and their channel masks do not say which noise channel is which imaging "
                     "channel: cannot prewhiten (use a matching noise scan, or --recon-option "
                     "prewhiten=off)");
  }

  // Lower Cholesky factor L of cov (n x n, Hermitian), or an empty vector when cov is not
  // positive definite.
  static std::vector<cdouble> cholesky(const std::vector<cdouble>& cov, size_t n) {
    std::vector<cdouble> lower(n * n, cdouble(0.0, 0.0));
    for (size_t j = 0; j < n; ++j) {
      double diagonal = cov[j * n + j].real();
      for (size_t k = 0; k < j; ++k) diagonal -= std::norm(lower[j * n + k]);
      if (!(diagonal > 0.0) || !std::isfinite(diagonal)) return {};
      const double root = std::sqrt(diagonal);
      lower[j * n + j] = root;
      for (size_t i = j + 1; i < n; ++i) {
        cdouble value = cov[i * n + j];
        for (size_t k = 0; k < j; ++k) value -= lower[i * n + k] * std::conj(lower[j * n + k]);
        lower[i * n + j] = value / root;
      }
    }
    return lower;
  }

  // W = L^-1 (lower triangular) in single precision.
  static std::vector<cfloat> inverse_cholesky(std::vector<cdouble> cov, size_t n) {
    double mean = 0.0;
    for (size_t i = 0; i < n; ++i) {
      const double variance = cov[i * n + i].real();
      if (!(variance > 0.0)) {
        throw NoiseError("noise scan channel " + std::to_string(i) +
                         " has zero noise power (all samples zero): the coil noise cannot be "
                         "whitened; drop the channel or use --recon-option prewhiten=off");
      }
      mean += variance / static_cast<double>(n);
    }
    std::vector<cdouble> lower = cholesky(cov, n);
    if (lower.empty()) {  // singular only numerically (e.g. two copies of one channel)
      for (size_t i = 0; i < n; ++i) cov[i * n + i] += kRegularisation * mean;
      lower = cholesky(cov, n);
      if (lower.empty()) throw NoiseError("the noise covariance cannot be factored");
    }
    std::vector<cdouble> inverse(n * n, cdouble(0.0, 0.0));
    for (size_t col = 0; col < n; ++col) {  // forward substitution, L x = e_col
      for (size_t i = col; i < n; ++i) {
        cdouble value = (i == col) ? cdouble(1.0, 0.0) : cdouble(0.0, 0.0);
        for (size_t k = col; k < i; ++k) value -= lower[i * n + k] * inverse[k * n + col];
        inverse[i * n + col] = value / lower[i * n + i];
      }
    }
    std::vector<cfloat> out(n * n);
    for (size_t i = 0; i < n * n; ++i) {
      if (!std::isfinite(inverse[i].real()) || !std::isfinite(inverse[i].imag())) {
        throw NoiseError("noise covariance cannot be inverted (non-finite samples?)");
      }
      out[i] = cfloat(static_cast<float>(inverse[i].real()), static_cast<float>(inverse[i].imag()));
    }
    return out;
  }

  bool enabled_;
  double receiver_bandwidth_;
  bool frozen_ = false;
  size_t channels_ = 0;
  uint64_t samples_ = 0;
  float dwell_us_ = 0.0f;
  uint64_t mask_[16] = {};
  std::vector<cdouble> sum_;  // lower triangle of sum x x^H, [channels][channels]
  std::vector<cfloat> matrix_;
  size_t matrix_channels_ = 0;
  std::vector<cfloat> out_;
};

}  // namespace mrd
