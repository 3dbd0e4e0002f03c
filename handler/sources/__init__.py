"""Where source images come from: public dir, S3 assets, the app's origin, allowed remote URLs."""
