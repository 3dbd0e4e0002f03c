export default function Page() {
  return <p>bench/opennext.py runs only this app&apos;s image function.</p>;
}
