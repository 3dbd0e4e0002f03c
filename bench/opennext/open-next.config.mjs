// OpenNext's defaults, except that the image function's sharp is installed for this machine's
// CPU (x64) instead of Lambda's arm64, so that bench/opennext.py can run it here.
const config = {
  default: {},
  imageOptimization: {
    install: { packages: ['sharp@0.35.5'], arch: 'x64', os: 'linux', libc: 'glibc' },
  },
};

export default config;
