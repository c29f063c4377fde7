"""`asrtune transcribe`: long recordings in any container, cut by VAD, to text, subtitles or JSON."""
